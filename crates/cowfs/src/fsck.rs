//! The checker: placeholder until the full implementation lands below.
