//! CRIU's on-disk image format, with no syscalls and no engine types.
