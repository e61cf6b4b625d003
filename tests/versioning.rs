//! Versioned steps across worker builds (filled in below).
