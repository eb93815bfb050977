//! Hostile inputs at the JOSE layer (SECURITY.md §1, cases 1–14): every
//! forged, bent or oversized token is refused by the admin API with the
//! generic 401, whatever its flaw.
