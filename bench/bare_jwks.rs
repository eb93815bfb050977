//! R5's baseline: a bare actix-web handler that returns the same bytes as
//! the service's JWKS, with the same `Content-Type`, nothing else: no
//! middleware, no state, no headers beyond what actix adds.
//!
//! `cargo run --release --example bare_jwks -- BODY_FILE PORT [WORKERS]`

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = || std::io::Error::other("usage: bare_jwks BODY_FILE PORT [WORKERS]");
    let body = web::Bytes::from(std::fs::read(args.next().ok_or_else(usage)?)?);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).ok_or_else(usage)?;
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/.well-known/jwks.json",
            web::get().to(move || {
                let body = body.clone();
                async move { HttpResponse::Ok().content_type("application/json").body(body) }
            }),
        )
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
