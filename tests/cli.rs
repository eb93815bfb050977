//! The binary as an operator meets it: bad settings stop it with exit 2 and
//! one line, `migrate` works, `serve` starts on SQLite with no other step and
//! stops cleanly on SIGTERM.

#![expect(clippy::expect_used, reason = "test set-up fails loudly, with the reason, where it cannot go on")]
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STS: &str = env!("CARGO_BIN_EXE_sts");

/// A command run in an empty temporary directory (no config file there, so
/// built-in defaults apply) with a clean environment.
fn sts(dir: &std::path::Path) -> Command {
    let mut command = Command::new(STS);
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("STS_LOG_FORMAT", "json");
    command
}

fn failure_line(mut command: Command) -> (Option<i32>, String) {
    let output = command.output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    (output.status.code(), stderr)
}

#[test]
fn a_bad_setting_stops_with_exit_2_and_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = sts(dir.path());
    command.arg("migrate").env("DATABASE_URL", "mysql://nope");
    let (code, stderr) = failure_line(command);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let mut command = sts(dir.path());
    command.arg("migrate").env("STS_ACCESS_TOKEN_TTL", "soon");
    let (code, stderr) = failure_line(command);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("STS_ACCESS_TOKEN_TTL"), "{stderr}");
}

#[test]
fn an_unreachable_database_or_unwritable_data_directory_stops_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut command = sts(dir.path());
    command.arg("migrate").env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none?connect_timeout=2");
    let (code, stderr) = failure_line(command);
    assert_eq!((code, stderr.lines().count()), (Some(2), 1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    let mut command = sts(dir.path());
    command.arg("migrate").env("DATABASE_URL", format!("sqlite://{}/sub/sts.db", locked.display()));
    let (code, stderr) = failure_line(command);
    // root ignores directory modes; the check is only meaningful for others.
    if std::fs::write(locked.join("probe"), b"").is_err() {
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("data directory"), "{stderr}");
    }
}

#[test]
fn a_key_file_readable_by_others_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let key = keys.join("20260101T000000Z-test.pk8");
    std::fs::write(&key, b"not a key").expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, stderr) = failure_line(sts(dir.path()));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("20260101T000000Z-test.pk8"), "{stderr}");
}

#[test]
fn help_explains_every_setting() {
    let output = Command::new(STS).arg("--help").output().expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for (variable, _) in sts::config::ENVIRONMENT {
        assert!(help.contains(variable), "--help names {variable}");
    }
}

#[test]
fn serve_starts_on_sqlite_by_default_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let mut child = sts(dir.path())
        .env("STS_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut printed = String::new();
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("listening on") {
            break;
        }
    }
    assert!(printed.contains(&format!("listening on http://127.0.0.1:{port}")), "{printed}");
    assert!(printed.contains("created user `admin`"), "first start creates admin: {printed}");
    assert!(dir.path().join("data/sts.db").exists(), "the SQLite file is created");
    std::thread::spawn(move || for _ in lines {});

    let ready = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}/health/ready"))
        .output();
    if let Ok(ready) = ready {
        assert_eq!(String::from_utf8_lossy(&ready.stdout), "200");
    }
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "exits within the grace period");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unknown_permission_in_the_role_mapping_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let roles = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/roles.toml")).expect("roles");
    let broken = roles.replacen("\"CREDENTIAL_ISSUE\"", "\"CREDENTIAL_ISSUE_ALL\"", 1);
    std::fs::write(dir.path().join("roles.toml"), broken).expect("write");
    let mut command = sts(dir.path());
    command.arg("migrate").env("STS_ROLES_FILE", dir.path().join("roles.toml"));
    let (code, stderr) = failure_line(command);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("CREDENTIAL_ISSUE_ALL"), "{stderr}");
}

#[test]
fn user_create_reads_the_password_from_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = sts(dir.path())
        .args(["user", "create", "--username", "operator", "--system-role", "AUDITOR", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"a-password-long-enough\n").expect("write");
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("created user `operator`"), "{stdout}");
    assert!(!stdout.contains("a-password-long-enough"), "the password is never echoed");
}

/// `sts key ...` in `dir` with its keys in `dir/keys`; returns (status, stdout, stderr).
fn key(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = sts(dir).arg("key").args(args).output().expect("runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// The (kid, state) of each line of `sts key list`.
fn listed(dir: &std::path::Path) -> Vec<(String, String)> {
    let (code, stdout, stderr) = key(dir, &["list"]);
    assert_eq!(code, Some(0), "{stderr}");
    let mut lines = stdout.lines();
    let header = lines.next().unwrap_or_default();
    for column in ["KID", "STATE", "CREATED", "PUBLISHED-SINCE", "PROMOTED", "RETIRED", "REMOVABLE-AFTER"] {
        assert!(header.contains(column), "{header}");
    }
    lines
        .map(|l| {
            let mut words = l.split_whitespace();
            (words.next().unwrap_or_default().to_owned(), words.next().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn key_remove_takes_a_kid_that_begins_with_a_hyphen() {
    // Key ids are base64url: one in 64 begins with `-`, which a command-line
    // parser would take for an option.
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(key(dir.path(), &["rotate"]).0, Some(0));
    for args in [&["remove", "-iXyz"][..], &["remove", "--force", "-iXyz"], &["remove", "-iXyz", "--force"]] {
        let (code, _, stderr) = key(dir.path(), args);
        assert_eq!(code, Some(2), "{args:?}");
        assert!(stderr.contains("no key -iXyz"), "{args:?}: the kid is read as a kid: {stderr}");
    }
}

#[test]
fn key_rotate_publishes_a_next_key_and_remove_refuses_keys_that_may_verify_live_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, stdout, _) = key(dir.path(), &["rotate"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("signs at once"), "the first key of an empty directory: {stdout}");
    let (code, stdout, _) = key(dir.path(), &["rotate"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("created next key"), "{stdout}");
    let (code, again, _) = key(dir.path(), &["rotate"]);
    assert_eq!(code, Some(0));
    assert!(again.contains("already waits"), "one next key at a time: {again}");
    let keys = listed(dir.path());
    let states: Vec<&str> = keys.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(states, ["current", "next"]);
    let (current, next) = (keys[0].0.clone(), keys[1].0.clone());

    let (code, _, stderr) = key(dir.path(), &["remove", &current, "--force"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("current signing key"), "never the current key: {stderr}");

    // An emergency: the new key signs, the current and next keys are gone.
    let (code, stdout, stderr) = key(dir.path(), &["rotate", "--emergency"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains("refuse"), "{stderr}");
    assert!(stdout.contains(&current) && stdout.contains(&next), "{stdout}");
    assert_eq!(listed(dir.path()).iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["current"]);
    assert!(!dir.path().join("data").exists(), "the key commands never touch the database");
}

#[test]
fn key_remove_refuses_a_recently_retired_key_unless_forced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    // The layout before key states: of two key files the older is retired
    // from now on, so its tokens may still be live.
    for name in ["20260101T000000Z-old.pk8", "20260201T000000Z-new.pk8"] {
        let path = keys.join(name);
        std::fs::write(&path, pkcs8()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let listing = listed(dir.path());
    let states: Vec<&str> = listing.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(states, ["retired", "current"], "the newest legacy key keeps signing");
    let retired = listing[0].0.clone();
    let (code, _, stderr) = key(dir.path(), &["remove", &retired]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("may still verify live tokens"), "{stderr}");
    assert!(keys.join("20260101T000000Z-old.pk8").exists());
    let (code, stdout, stderr) = key(dir.path(), &["remove", &retired, "--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("removed retired key"), "{stdout}");
    assert!(!keys.join("20260101T000000Z-old.pk8").exists(), "its file is deleted");
    assert_eq!(listed(dir.path()).len(), 1);
}

/// A fresh Ed25519 PKCS#8 key, as `sts` writes them (via a throwaway run).
fn pkcs8() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = key(dir.path(), &["rotate"]);
    assert_eq!(code, Some(0), "{stderr}");
    let file = std::fs::read_dir(dir.path().join("keys"))
        .expect("keys")
        .filter_map(Result::ok)
        .find(|e| e.path().extension().is_some_and(|x| x == "pk8"))
        .expect("a key file");
    std::fs::read(file.path()).expect("read")
}

#[test]
fn an_unparsable_key_file_or_a_corrupt_state_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).expect("mkdir");
    let key_file = keys.join("20260101T000000Z-junk.pk8");
    std::fs::write(&key_file, b"not a key").expect("write");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (code, stderr) = failure_line(sts(dir.path()));
    assert_eq!((code, stderr.lines().count()), (Some(2), 1), "{stderr}");
    assert!(stderr.contains("20260101T000000Z-junk.pk8"), "{stderr}");

    std::fs::remove_file(&key_file).expect("rm");
    std::fs::write(keys.join("state.json"), b"{\"version\": 1, \"keys\": [").expect("write");
    let (code, stderr) = failure_line(sts(dir.path()));
    assert_eq!((code, stderr.lines().count()), (Some(2), 1), "{stderr}");
    assert!(stderr.contains("state.json") && stderr.contains("corrupt"), "{stderr}");
    let (code, _, stderr) = key(dir.path(), &["list"]);
    assert_eq!(code, Some(2), "the commands refuse it too: {stderr}");
}

#[test]
fn key_commands_never_print_private_key_material() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut printed = String::new();
    for args in [&["rotate"][..], &["rotate"], &["list"], &["rotate", "--emergency"], &["list"]] {
        let (_, stdout, stderr) = key(dir.path(), args);
        printed.push_str(&stdout);
        printed.push_str(&stderr);
    }
    for entry in std::fs::read_dir(dir.path().join("keys")).expect("keys").filter_map(Result::ok) {
        if entry.path().extension().is_none_or(|x| x != "pk8") {
            continue;
        }
        let pkcs8 = std::fs::read(entry.path()).expect("read");
        // The last 32 bytes of a ring Ed25519 PKCS#8 v2 document are the
        // public key; the seed sits before it. Look for the seed in any encoding.
        let seed = &pkcs8[16..48];
        for encoded in [
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed),
            base64::engine::general_purpose::STANDARD.encode(seed),
            seed.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        ] {
            assert!(!printed.contains(&encoded[..20]), "private key material printed");
        }
    }
}
