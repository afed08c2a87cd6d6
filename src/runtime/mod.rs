//! Process plumbing shared by ringmaster's components.

pub mod copy_self;
