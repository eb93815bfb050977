//! Validated names: what an admin may call an organisation or a user, and the
//! normalised key their uniqueness is decided on.

/// Longest organisation name, in characters.
pub const MAX_ORGANISATION_NAME: usize = 200;
/// Longest username, in characters.
pub const MAX_USERNAME: usize = 128;

/// A trimmed, non-empty name without control characters, and its
/// case-insensitive key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub display: String,
    pub key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not contain control characters")]
    ControlCharacter,
}

fn validate(raw: &str, max: usize) -> Result<Name, NameError> {
    let display = raw.trim();
    if display.is_empty() {
        return Err(NameError::Empty);
    }
    if display.chars().count() > max {
        return Err(NameError::TooLong(max));
    }
    if display.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(Name { display: display.to_owned(), key: display.to_lowercase() })
}

pub fn organisation_name(raw: &str) -> Result<Name, NameError> {
    validate(raw, MAX_ORGANISATION_NAME)
}

pub fn username(raw: &str) -> Result<Name, NameError> {
    validate(raw, MAX_USERNAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_keyed_case_insensitively() {
        assert_eq!(
            organisation_name("  Acme Bank ").ok(),
            Some(Name { display: "Acme Bank".into(), key: "acme bank".into() })
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(organisation_name("   "), Err(NameError::Empty));
        assert_eq!(organisation_name(&"x".repeat(201)), Err(NameError::TooLong(200)));
        assert!(organisation_name(&"é".repeat(200)).is_ok());
        assert_eq!(organisation_name("a\nb"), Err(NameError::ControlCharacter));
    }
}
