//! Runs scenario folders through the harness and checks their results.
