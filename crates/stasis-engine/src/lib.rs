//! Process-tree checkpoint/restore engine.
