//! Tests of the adapter's helpers.

use super::*;

#[test]
fn a_panicking_handler_is_caught_and_the_thread_goes_on() {
    let mut after = false;
    caught("test", || panic!("a bug in a handler"));
    caught("test", || after = true);
    assert!(after);
}
