//! The thin syscall layer: the only crate of Stasis with `unsafe`.
