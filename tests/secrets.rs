//! Secrets by reference, end to end (filled in below).
