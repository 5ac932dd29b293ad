//! [`Value`]: a msgpack value, the type of a result's `data`.
//!
//! It is a superset of JSON: besides null, bool, numbers, strings, arrays and maps it has
//! byte strings ([`Value::Bin`], which the bridge turns into base64 text) and map keys
//! that are integers. Most handlers never name it: they return a `serde_json::Value`
//! (for example `serde_json::json!({...})`), which converts losslessly.

/// A msgpack value.
///
/// Integers are kept in [`Value::Int`] when they fit an `i64`; only larger positive ones
/// use [`Value::UInt`]. The `From` conversions and the decoder keep to that rule, so that
/// two equal numbers compare equal.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    /// msgpack nil, JSON null.
    #[default]
    Nil,
    Bool(bool),
    /// An integer in the `i64` range.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A float (always written as a msgpack float 64).
    Float(f64),
    /// Text (msgpack str).
    Str(String),
    /// Bytes (msgpack bin); the bridge writes them to JSON as base64.
    Bin(Vec<u8>),
    Array(Vec<Value>),
    /// A map, in insertion order. Keys are usually [`Value::Str`]; integer keys become
    /// their decimal text in JSON; other key types are refused by the bridge.
    Map(Vec<(Value, Value)>),
    /// A msgpack extension value (type code, bytes). It has no JSON form: the bridge
    /// refuses it in a result.
    Ext(i8, Vec<u8>),
}

impl Value {
    /// An empty map.
    pub fn map() -> Value {
        Value::Map(Vec::new())
    }

    /// A map from `(key, value)` pairs, in order.
    ///
    /// ```
    /// use flow_bridge_adapter::Value;
    /// let v = Value::from_pairs([("raw", Value::Bin(vec![0, 1])), ("n", 2.into())]);
    /// assert_eq!(v.get("n"), Some(&Value::Int(2)));
    /// ```
    pub fn from_pairs<K, V, I>(pairs: I) -> Value
    where
        K: Into<Value>,
        V: Into<Value>,
        I: IntoIterator<Item = (K, V)>,
    {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Set `key` in a map (replacing an existing entry with that key), and return the
    /// map, so that calls chain. Panics if `self` is not a map.
    pub fn with(mut self, key: impl Into<Value>, value: impl Into<Value>) -> Value {
        self.insert(key, value);
        self
    }

    /// Set `key` in a map, replacing an existing entry with that key. Panics if `self`
    /// is not a map.
    pub fn insert(&mut self, key: impl Into<Value>, value: impl Into<Value>) {
        let (key, value) = (key.into(), value.into());
        match self {
            Value::Map(entries) => {
                if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
                    slot.1 = value;
                } else {
                    entries.push((key, value));
                }
            }
            other => panic!("Value::insert on a {}, not a map", other.kind()),
        }
    }

    /// The value stored under the text key `key`, if `self` is a map that has one.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .rev()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text, if this is a [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a [`Value::Bin`].
    pub fn as_bin(&self) -> Option<&[u8]> {
        match self {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, if this is an integer that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The integer, if this is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            _ => None,
        }
    }

    /// Whether this is a map.
    pub fn is_map(&self) -> bool {
        matches!(self, Value::Map(_))
    }

    /// A short name of the value's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::UInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bin(_) => "bin",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Ext(..) => "ext",
        }
    }
}

impl From<()> for Value {
    fn from(_: ()) -> Value {
        Value::Nil
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::Int(v as i64) }
        }
    )*};
}
from_signed!(i8, i16, i32, i64, isize, u8, u16, u32);

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::from(v as u64)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(v as f64)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Str(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Nil, Into::into)
    }
}

impl<T: Into<Value>> From<Vec<T>> for Value {
    /// A `Vec` becomes an array. For bytes, use [`Value::Bin`] instead.
    fn from(v: Vec<T>) -> Value {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.into_iter()
                    .map(|(k, v)| (Value::Str(k), Value::from(v)))
                    .collect(),
            ),
        }
    }
}

impl From<&serde_json::Value> for Value {
    fn from(v: &serde_json::Value) -> Value {
        Value::from(v.clone())
    }
}
