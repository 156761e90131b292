//! Tests of `hash`.

//! Expected digests and texts come from running Python cachetta 0.7.0's `hash`.

use super::python_json::write_float;
use super::*;
use serde_json::json;

#[test]
fn positional_tuple_matches_python() {
    assert_eq!(hash(&(1, "x")), "076a79edac13d6e8");
    assert_eq!(
        key_text(&(1, "x")).unwrap(),
        r#"{"args": [1, "x"], "kwargs": {}}"#
    );
}

#[test]
fn unit_is_no_arguments() {
    assert_eq!(hash(&()), "ddcb0ace97c57048");
    assert_eq!(hash(&json!([])), "ddcb0ace97c57048");
    assert_eq!(hash(&Vec::<u8>::new()), "ddcb0ace97c57048");
}

#[test]
fn a_non_sequence_is_one_argument() {
    assert_eq!(hash("user-123"), "51460ed6e5ce46e3");
    assert_eq!(hash(&("user-123",)), "51460ed6e5ce46e3");
}

#[test]
fn floats_are_written_like_python_repr() {
    let args = (0.1, 1e16, 1e-7, 1.5, 100.0, -0.0, 123456789012345.0);
    assert_eq!(
        key_text(&args).unwrap(),
        r#"{"args": [0.1, 1e+16, 1e-07, 1.5, 100.0, -0.0, 123456789012345.0], "kwargs": {}}"#
    );
    assert_eq!(hash(&args), "4c20d6d806985e6c");
}

#[test]
fn float_layout_switches_to_exponent_outside_1e_minus_4_to_1e16() {
    let cases: &[(f64, &str)] = &[
        (0.0, "0.0"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1234567890123456.0, "1234567890123456.0"),
        (1e16, "1e+16"),
        (1.5e16, "1.5e+16"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (5e-324, "5e-324"),
        // An exact tie between two shortest candidates: Python rounds to even.
        (1774306205806144.0 + 0.25, "1774306205806144.2"),
        (0.3, "0.3"),
        (2.0f64.powi(70), "1.1805916207174113e+21"),
        (-2.5e-100, "-2.5e-100"),
        (f64::NAN, "NaN"),
        (f64::NEG_INFINITY, "-Infinity"),
    ];
    for &(f, python) in cases {
        let mut out = String::new();
        write_float(&mut out, f);
        assert_eq!(out, python, "repr of {f:?}");
    }
}

#[test]
fn f32_is_its_shortest_decimal() {
    assert_eq!(hash(&(0.1f32,)), hash(&(0.1f64,)));
}

#[test]
fn strings_are_ascii_escaped_with_surrogate_pairs() {
    let args = ("é😀\u{0}\u{7f}\n\"\\",);
    assert_eq!(
        key_text(&args).unwrap(),
        r#"{"args": ["\u00e9\ud83d\ude00\u0000\u007f\n\"\\"], "kwargs": {}}"#
    );
    assert_eq!(hash(&args), "a9a7da2f9a7bcb85");
}

#[test]
fn nested_objects_have_sorted_keys() {
    let args = json!([{"b": [1, {"z": null, "a": true}], "a": false}]);
    assert_eq!(hash(&args), "b13577b8e9d27da5");
}

#[test]
fn integers_have_no_size_limit() {
    let args = (u64::MAX, i64::MIN, u128::MAX, i128::MIN);
    assert_eq!(hash(&args), "e627d0659410240d");
}

#[test]
fn non_finite_floats_are_python_nan_and_infinity() {
    let args = (f64::NAN, f64::INFINITY, f64::NEG_INFINITY);
    assert_eq!(hash(&args), "485a8bc6d40bd89c");
}

#[test]
fn integer_keys_sort_numerically_like_python_int_keys() {
    let map: BTreeMap<u32, &str> = [(2, "b"), (10, "a")].into();
    assert_eq!(hash(&(map,)), "52122effac11fe7a");
}

#[test]
fn none_is_a_null_argument() {
    assert_eq!(hash(&[None::<()>]), "2d5af4145f63718d");
    assert_eq!(hash(&json!([null])), "2d5af4145f63718d");
}

#[test]
fn keys_python_cannot_sort_are_an_error() {
    let map: BTreeMap<bool, u8> = [(true, 1)].into();
    assert!(try_hash(&(map,)).is_err());
}
