//! The cache-key digest, byte-for-byte the one Python cachetta's `hash(*args)` returns.
//!
//! Python cachetta 0.7.0 (`src/cachetta/hash.py`) computes:
//!
//! ```python
//! key_data = json.dumps({"args": args, "kwargs": kwargs}, sort_keys=True, default=str)
//! return hashlib.sha256(key_data.encode()).hexdigest()[:16]
//! ```
//!
//! `args` is the positional tuple (a JSON list) and `kwargs` is always `{}` here. So the text
//! hashed is Python's `json.dumps` with its defaults: separators `", "` and `": "`; keys sorted
//! at every level (by code point, which is UTF-8 byte order, so `String`'s `Ord`);
//! `ensure_ascii=True` (everything outside `' '..='~'` becomes lowercase `\uXXXX`, astral chars
//! as surrogate pairs; `\" \\ \n \r \t \b \f` keep their short forms); floats as
//! `float.__repr__`: the shortest digits that round-trip, the nearest ones with ties to even
//! (ryu agrees; Rust's own `{:e}` does not on ties), in exponent form `1e+16`/`1e-05` when the
//! decimal exponent is below -4 or at least 16, else positional with at least `.0`; and `NaN`,
//! `Infinity`, `-Infinity`. No crate writes that dialect, so this module serializes to it
//! directly from any `Serialize` value (not via `serde_json::Value`, which would turn NaN into
//! `null` and refuse integers beyond 64 bits).
//!
//! The Python argument a Rust value stands for is what `json.loads` makes of the text
//! `serde_json::to_string` writes for it, except that NaN and the infinities stay Python's
//! `nan`/`inf` (serde_json writes `null`) and a map with integer keys is a dict with `int` keys
//! (sorted numerically, as Python does, before they become strings). `default=str` only matters
//! for objects that are not JSON-native, which Rust cannot pass. No JSON-native case is known
//! to differ: `tests/python_hash.rs` checks a table and thousands of seeded random values
//! against the real package. Refused with an error from [`try_hash`]: a map mixing string and
//! integer keys (Python raises `TypeError` sorting it) or with any other kind of key.
//!
//! The JavaScript package's `hash` hashes `JSON.stringify(args)` and gives other digests; this
//! module matches the Python one only.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use serde::ser::{self, Impossible, Serialize};
use sha2::{Digest, Sha256};

mod python_json;
use python_json::write_list;

/// The 16-hex-digit digest Python cachetta's `hash(*args)` returns for the same arguments.
///
/// `args` is the positional argument list: a tuple (`(1, "x")`, `(x,)`), slice, array,
/// `Vec` or JSON array. `()` (and `serde_json::Value::Null`, which serde writes as `()`) means
/// no arguments, like Python's `hash()`; any other value that is not a sequence is one
/// argument. For a single `null` argument pass `[None::<()>]` or `json!([null])`.
///
/// # Panics
///
/// When [`try_hash`] fails: a map whose keys are neither all strings nor all integers.
pub fn hash<A: Serialize + ?Sized>(args: &A) -> String {
    try_hash(args).unwrap_or_else(|e| panic!("{e}"))
}

/// [`hash`], returning an error for arguments that have no Python `json.dumps` form.
pub fn try_hash<A: Serialize + ?Sized>(args: &A) -> Result<String, HashError> {
    let digest = Sha256::digest(key_text(args)?.as_bytes());
    let mut hex = String::with_capacity(16);
    for byte in &digest[..8] {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    Ok(hex)
}

/// The exact text that is hashed: `json.dumps({"args": [..], "kwargs": {}}, sort_keys=True)`.
///
/// Useful to see why two argument lists do or do not share a cache key.
pub fn key_text<A: Serialize + ?Sized>(args: &A) -> Result<String, HashError> {
    let args = match args.serialize(TreeSerializer)? {
        Json::List(items) => items,
        Json::Unit => Vec::new(),
        single => vec![single],
    };
    let mut out = String::from("{\"args\": ");
    write_list(&mut out, &args);
    out.push_str(", \"kwargs\": {}}");
    Ok(out)
}

/// Arguments that Python's `json.dumps(..., sort_keys=True)` could not have encoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot compute a Python-compatible cache key: {0}")]
pub struct HashError(String);

impl ser::Error for HashError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        HashError(msg.to_string())
    }
}

/// A value in Python's JSON data model, objects already in `sort_keys` order.
#[derive(Debug)]
pub(crate) enum Json {
    Null,
    /// Serde's `()`: `null` inside the arguments, "no arguments" at the top.
    Unit,
    Bool(bool),
    /// Decimal digits; Python ints have no size limit, so neither do these.
    Int(String),
    Float(f64),
    Str(String),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Builds a [`Json`] tree from any `Serialize` value, following serde_json's mapping of
/// Rust shapes to JSON (unit variants as strings, newtype variants as `{"Variant": ..}`).
struct TreeSerializer;

fn single_entry(key: &str, value: Json) -> Json {
    Json::Object(vec![(key.to_owned(), value)])
}

/// Every integer width is the same JSON number: decimal digits, as Python prints them.
macro_rules! int_values {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method(self, v: $ty) -> Result<Json, HashError> {
            Ok(Json::Int(v.to_string()))
        }
    )*};
}

impl ser::Serializer for TreeSerializer {
    type Ok = Json;
    type Error = HashError;
    type SerializeSeq = ListBuilder;
    type SerializeTuple = ListBuilder;
    type SerializeTupleStruct = ListBuilder;
    type SerializeTupleVariant = VariantListBuilder;
    type SerializeMap = ObjectBuilder;
    type SerializeStruct = ObjectBuilder;
    type SerializeStructVariant = VariantObjectBuilder;

    fn serialize_bool(self, v: bool) -> Result<Json, HashError> {
        Ok(Json::Bool(v))
    }
    int_values!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128);
    fn serialize_f32(self, v: f32) -> Result<Json, HashError> {
        // The shortest decimal that names this f32, as serde_json writes it; widening
        // (`v as f64`) would turn 0.1f32 into 0.10000000149011612.
        let widened = if v.is_finite() {
            v.to_string()
                .parse()
                .expect("an f32's Display parses as f64")
        } else {
            f64::from(v)
        };
        Ok(Json::Float(widened))
    }
    fn serialize_f64(self, v: f64) -> Result<Json, HashError> {
        Ok(Json::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Json, HashError> {
        Ok(Json::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Json, HashError> {
        Ok(Json::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Json, HashError> {
        Ok(Json::List(
            v.iter().map(|b| Json::Int(b.to_string())).collect(),
        ))
    }
    fn serialize_none(self) -> Result<Json, HashError> {
        Ok(Json::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Json, HashError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Json, HashError> {
        Ok(Json::Unit)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Json, HashError> {
        Ok(Json::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Json, HashError> {
        Ok(Json::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Json, HashError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Json, HashError> {
        Ok(single_entry(variant, value.serialize(self)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<ListBuilder, HashError> {
        Ok(ListBuilder(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<ListBuilder, HashError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<ListBuilder, HashError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantListBuilder, HashError> {
        Ok(VariantListBuilder {
            variant,
            items: ListBuilder(Vec::with_capacity(len)),
        })
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<ObjectBuilder, HashError> {
        Ok(ObjectBuilder::default())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<ObjectBuilder, HashError> {
        Ok(ObjectBuilder::default())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<VariantObjectBuilder, HashError> {
        Ok(VariantObjectBuilder {
            variant,
            fields: ObjectBuilder::default(),
        })
    }
}

struct ListBuilder(Vec<Json>);

impl ListBuilder {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.0.push(value.serialize(TreeSerializer)?);
        Ok(())
    }
}

impl ser::SerializeSeq for ListBuilder {
    type Ok = Json;
    type Error = HashError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.push(value)
    }
    fn end(self) -> Result<Json, HashError> {
        Ok(Json::List(self.0))
    }
}

impl ser::SerializeTuple for ListBuilder {
    type Ok = Json;
    type Error = HashError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.push(value)
    }
    fn end(self) -> Result<Json, HashError> {
        Ok(Json::List(self.0))
    }
}

impl ser::SerializeTupleStruct for ListBuilder {
    type Ok = Json;
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.push(value)
    }
    fn end(self) -> Result<Json, HashError> {
        Ok(Json::List(self.0))
    }
}

struct VariantListBuilder {
    variant: &'static str,
    items: ListBuilder,
}

impl ser::SerializeTupleVariant for VariantListBuilder {
    type Ok = Json;
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.items.push(value)
    }
    fn end(self) -> Result<Json, HashError> {
        Ok(single_entry(self.variant, Json::List(self.items.0)))
    }
}

/// A key as Python's dict would hold it: `str` or `int` (JSON-native maps have `str` keys;
/// a Rust map with integer keys stands for a dict with `int` keys).
enum Key {
    Str(String),
    Int(i128),
}

/// Collects entries and sorts them as `sort_keys=True` does: Python sorts the original
/// keys (ints numerically) and only then turns them into strings.
#[derive(Default)]
struct ObjectBuilder {
    str_keys: BTreeMap<String, Json>,
    int_keys: BTreeMap<i128, Json>,
    pending_key: Option<Key>,
}

impl ObjectBuilder {
    fn insert(&mut self, key: Key, value: Json) {
        match key {
            Key::Str(k) => self.str_keys.insert(k, value),
            Key::Int(k) => self.int_keys.insert(k, value),
        };
    }

    fn build(self) -> Result<Json, HashError> {
        if !self.str_keys.is_empty() && !self.int_keys.is_empty() {
            return Err(HashError(
                "a map mixes string and integer keys, which Python cannot sort".into(),
            ));
        }
        let ints = self.int_keys.into_iter().map(|(k, v)| (k.to_string(), v));
        Ok(Json::Object(
            self.str_keys.into_iter().chain(ints).collect(),
        ))
    }
}

impl ser::SerializeMap for ObjectBuilder {
    type Ok = Json;
    type Error = HashError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), HashError> {
        self.pending_key = Some(key.serialize(KeySerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| HashError("a map value came without a key".into()))?;
        let value = value.serialize(TreeSerializer)?;
        self.insert(key, value);
        Ok(())
    }
    fn end(self) -> Result<Json, HashError> {
        self.build()
    }
}

impl ser::SerializeStruct for ObjectBuilder {
    type Ok = Json;
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        let value = value.serialize(TreeSerializer)?;
        self.insert(Key::Str(key.to_owned()), value);
        Ok(())
    }
    fn end(self) -> Result<Json, HashError> {
        self.build()
    }
}

struct VariantObjectBuilder {
    variant: &'static str,
    fields: ObjectBuilder,
}

impl ser::SerializeStructVariant for VariantObjectBuilder {
    type Ok = Json;
    type Error = HashError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        ser::SerializeStruct::serialize_field(&mut self.fields, key, value)
    }
    fn end(self) -> Result<Json, HashError> {
        Ok(single_entry(self.variant, self.fields.build()?))
    }
}

/// Turns a map key into a [`Key`]; anything but strings and integers is refused.
struct KeySerializer;

fn bad_key(kind: &str) -> HashError {
    HashError(format!(
        "a map key is {kind}; only string or integer keys have a Python JSON form"
    ))
}

macro_rules! int_keys {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method(self, v: $ty) -> Result<Key, HashError> {
            Ok(Key::Int(i128::from(v)))
        }
    )*};
}

impl ser::Serializer for KeySerializer {
    type Ok = Key;
    type Error = HashError;
    type SerializeSeq = Impossible<Key, HashError>;
    type SerializeTuple = Impossible<Key, HashError>;
    type SerializeTupleStruct = Impossible<Key, HashError>;
    type SerializeTupleVariant = Impossible<Key, HashError>;
    type SerializeMap = Impossible<Key, HashError>;
    type SerializeStruct = Impossible<Key, HashError>;
    type SerializeStructVariant = Impossible<Key, HashError>;

    int_keys!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64);

    fn serialize_u128(self, v: u128) -> Result<Key, HashError> {
        i128::try_from(v)
            .map(Key::Int)
            .map_err(|_| bad_key("an integer beyond i128"))
    }
    fn serialize_str(self, v: &str) -> Result<Key, HashError> {
        Ok(Key::Str(v.to_owned()))
    }
    fn serialize_char(self, v: char) -> Result<Key, HashError> {
        Ok(Key::Str(v.to_string()))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Key, HashError> {
        Ok(Key::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Key, HashError> {
        value.serialize(self)
    }
    fn serialize_bool(self, _v: bool) -> Result<Key, HashError> {
        Err(bad_key("a bool"))
    }
    fn serialize_f32(self, _v: f32) -> Result<Key, HashError> {
        Err(bad_key("a float"))
    }
    fn serialize_f64(self, _v: f64) -> Result<Key, HashError> {
        Err(bad_key("a float"))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Key, HashError> {
        Err(bad_key("bytes"))
    }
    fn serialize_none(self) -> Result<Key, HashError> {
        Err(bad_key("None"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<Key, HashError> {
        Err(bad_key("an Option"))
    }
    fn serialize_unit(self) -> Result<Key, HashError> {
        Err(bad_key("()"))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Key, HashError> {
        Err(bad_key("a unit struct"))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<Key, HashError> {
        Err(bad_key("an enum with data"))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, HashError> {
        Err(bad_key("a sequence"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, HashError> {
        Err(bad_key("a tuple"))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, HashError> {
        Err(bad_key("a tuple struct"))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, HashError> {
        Err(bad_key("an enum with data"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, HashError> {
        Err(bad_key("a map"))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, HashError> {
        Err(bad_key("a struct"))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, HashError> {
        Err(bad_key("an enum with data"))
    }
}

#[cfg(test)]
mod tests;
