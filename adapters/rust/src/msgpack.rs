//! A small msgpack encoder and decoder, just what the protocol needs.
//!
//! The encoder always picks the shortest form (SPEC.md section 1, "canonical form"),
//! uses str for text and bin for bytes, and writes floats as float 64. The decoder
//! borrows strings and byte strings from the input ([`ValueRef`]), checks UTF-8, and
//! refuses nesting deeper than [`MAX_DEPTH`] so that no input can exhaust the stack.

use crate::value::Value;

/// The deepest nesting of arrays and maps the decoder accepts.
pub const MAX_DEPTH: usize = 512;

/// Why bytes are not one valid msgpack value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

/// A decoded msgpack value that borrows its strings and bytes from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRef<'a> {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(Vec<ValueRef<'a>>),
    Map(Vec<(ValueRef<'a>, ValueRef<'a>)>),
    Ext(i8, &'a [u8]),
}

impl<'a> ValueRef<'a> {
    /// An owned copy.
    pub fn to_owned_value(&self) -> Value {
        match self {
            ValueRef::Nil => Value::Nil,
            ValueRef::Bool(b) => Value::Bool(*b),
            ValueRef::Int(i) => Value::Int(*i),
            ValueRef::UInt(u) => Value::from(*u),
            ValueRef::Float(f) => Value::Float(*f),
            ValueRef::Str(s) => Value::Str((*s).to_owned()),
            ValueRef::Bin(b) => Value::Bin(b.to_vec()),
            ValueRef::Array(a) => Value::Array(a.iter().map(ValueRef::to_owned_value).collect()),
            ValueRef::Map(m) => Value::Map(
                m.iter()
                    .map(|(k, v)| (k.to_owned_value(), v.to_owned_value()))
                    .collect(),
            ),
            ValueRef::Ext(t, b) => Value::Ext(*t, b.to_vec()),
        }
    }

    /// A borrowed view of an owned value (the tests build messages from values).
    #[cfg(test)]
    pub fn from_value(v: &'a Value) -> ValueRef<'a> {
        match v {
            Value::Nil => ValueRef::Nil,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::UInt(u) => match i64::try_from(*u) {
                Ok(i) => ValueRef::Int(i),
                Err(_) => ValueRef::UInt(*u),
            },
            Value::Float(f) => ValueRef::Float(*f),
            Value::Str(s) => ValueRef::Str(s),
            Value::Bin(b) => ValueRef::Bin(b),
            Value::Array(a) => ValueRef::Array(a.iter().map(ValueRef::from_value).collect()),
            Value::Map(m) => ValueRef::Map(
                m.iter()
                    .map(|(k, v)| (ValueRef::from_value(k), ValueRef::from_value(v)))
                    .collect(),
            ),
            Value::Ext(t, b) => ValueRef::Ext(*t, b),
        }
    }

    /// A short name of the value's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            ValueRef::Nil => "nil",
            ValueRef::Bool(_) => "bool",
            ValueRef::Int(_) | ValueRef::UInt(_) => "int",
            ValueRef::Float(_) => "float",
            ValueRef::Str(_) => "str",
            ValueRef::Bin(_) => "bin",
            ValueRef::Array(_) => "array",
            ValueRef::Map(_) => "map",
            ValueRef::Ext(..) => "ext",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding

/// Decode exactly one msgpack value that fills all of `input`.
pub fn decode(input: &[u8]) -> Result<ValueRef<'_>, DecodeError> {
    let mut d = Decoder { buf: input, pos: 0 };
    let v = d.value(0)?;
    if d.pos != input.len() {
        return Err(DecodeError(format!(
            "{} byte(s) after the msgpack value",
            input.len() - d.pos
        )));
    }
    Ok(v)
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(DecodeError("the msgpack value ends early".into()));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, DecodeError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | b as u64))
    }

    fn str(&mut self, n: usize) -> Result<ValueRef<'a>, DecodeError> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(ValueRef::Str)
            .map_err(|e| DecodeError(format!("invalid UTF-8 in a str: {e}")))
    }

    fn array(&mut self, n: usize, depth: usize) -> Result<ValueRef<'a>, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError(format!("nesting deeper than {MAX_DEPTH}")));
        }
        // Each element takes at least one byte: never trust the header for capacity.
        let mut items = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(ValueRef::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Result<ValueRef<'a>, DecodeError> {
        if depth >= MAX_DEPTH {
            return Err(DecodeError(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let mut items = Vec::with_capacity(n.min((self.buf.len() - self.pos) / 2));
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            items.push((k, v));
        }
        Ok(ValueRef::Map(items))
    }

    fn ext(&mut self, n: usize) -> Result<ValueRef<'a>, DecodeError> {
        let t = self.byte()? as i8;
        Ok(ValueRef::Ext(t, self.take(n)?))
    }

    fn value(&mut self, depth: usize) -> Result<ValueRef<'a>, DecodeError> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => ValueRef::Int(m as i64),
            0x80..=0x8f => return self.map((m & 0x0f) as usize, depth),
            0x90..=0x9f => return self.array((m & 0x0f) as usize, depth),
            0xa0..=0xbf => return self.str((m & 0x1f) as usize),
            0xc0 => ValueRef::Nil,
            0xc1 => return Err(DecodeError("byte 0xc1 is never used in msgpack".into())),
            0xc2 => ValueRef::Bool(false),
            0xc3 => ValueRef::Bool(true),
            0xc4..=0xc6 => {
                let n = self.be(1 << (m - 0xc4))? as usize;
                ValueRef::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.be(1 << (m - 0xc7))? as usize;
                return self.ext(n);
            }
            0xca => ValueRef::Float(f32::from_bits(self.be(4)? as u32) as f64),
            0xcb => ValueRef::Float(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => {
                let u = self.be(1 << (m - 0xcc))?;
                match i64::try_from(u) {
                    Ok(i) => ValueRef::Int(i),
                    Err(_) => ValueRef::UInt(u),
                }
            }
            0xd0 => ValueRef::Int(self.be(1)? as u8 as i8 as i64),
            0xd1 => ValueRef::Int(self.be(2)? as u16 as i16 as i64),
            0xd2 => ValueRef::Int(self.be(4)? as u32 as i32 as i64),
            0xd3 => ValueRef::Int(self.be(8)? as i64),
            0xd4..=0xd8 => return self.ext(1 << (m - 0xd4)),
            0xd9..=0xdb => {
                let n = self.be(1 << (m - 0xd9))? as usize;
                return self.str(n);
            }
            0xdc | 0xdd => {
                let n = self.be(2 << (m - 0xdc))? as usize;
                return self.array(n, depth);
            }
            0xde | 0xdf => {
                let n = self.be(2 << (m - 0xde))? as usize;
                return self.map(n, depth);
            }
            0xe0..=0xff => ValueRef::Int(m as i8 as i64),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Encoding (shortest forms)

/// Write nil.
#[inline]
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Write a bool.
#[inline]
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

/// Write a non-negative integer in its shortest form.
#[inline]
pub fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Write an integer in its shortest form.
#[inline]
pub fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Write a float as float 64.
#[inline]
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    out.push(0xcb);
    out.extend_from_slice(&v.to_bits().to_be_bytes());
}

/// Write a str.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// Write a bin.
#[inline]
pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= 0xff {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// Write an array header for `n` items.
#[inline]
pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= 0xffff {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Write a map header for `n` entries.
#[inline]
pub fn write_map_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Write an ext value.
pub fn write_ext(out: &mut Vec<u8>, t: i8, b: &[u8]) {
    let n = b.len();
    match n {
        1 => out.push(0xd4),
        2 => out.push(0xd5),
        4 => out.push(0xd6),
        8 => out.push(0xd7),
        16 => out.push(0xd8),
        _ if n <= 0xff => out.extend_from_slice(&[0xc7, n as u8]),
        _ if n <= 0xffff => {
            out.push(0xc8);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc9);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.push(t as u8);
    out.extend_from_slice(b);
}

/// Write any value.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Nil => write_nil(out),
        Value::Bool(b) => write_bool(out, *b),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Bin(b) => write_bin(out, b),
        Value::Array(a) => {
            write_array_len(out, a.len());
            for item in a {
                write_value(out, item);
            }
        }
        Value::Map(m) => {
            write_map_len(out, m.len());
            for (k, item) in m {
                write_value(out, k);
                write_value(out, item);
            }
        }
        Value::Ext(t, b) => write_ext(out, *t, b),
    }
}

/// Write a `serde_json::Value` directly, without building a [`Value`] first.
pub fn write_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    match v {
        serde_json::Value::Null => write_nil(out),
        serde_json::Value::Bool(b) => write_bool(out, *b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_int(out, i)
            } else if let Some(u) = n.as_u64() {
                write_uint(out, u)
            } else {
                write_f64(out, n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => write_str(out, s),
        serde_json::Value::Array(a) => {
            write_array_len(out, a.len());
            for item in a {
                write_json(out, item);
            }
        }
        serde_json::Value::Object(o) => {
            write_map_len(out, o.len());
            for (k, item) in o {
                write_str(out, k);
                write_json(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Value) {
        let mut out = Vec::new();
        write_value(&mut out, &v);
        assert_eq!(
            decode(&out).unwrap().to_owned_value(),
            v,
            "bytes {out:02x?}"
        );
    }

    #[test]
    fn ints_roundtrip_at_every_boundary() {
        for i in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            0xffff_ffff,
            0x1_0000_0000,
            i64::MAX,
            -1,
            -32,
            -33,
            -128,
            -129,
            -32768,
            -32769,
            i32::MIN as i64,
            i32::MIN as i64 - 1,
            i64::MIN,
        ] {
            roundtrip(Value::Int(i));
        }
        roundtrip(Value::UInt(u64::MAX));
    }

    #[test]
    fn shortest_forms() {
        let enc = |v: Value| {
            let mut out = Vec::new();
            write_value(&mut out, &v);
            out
        };
        assert_eq!(enc(Value::Int(127)), [0x7f]);
        assert_eq!(enc(Value::Int(128)), [0xcc, 0x80]);
        assert_eq!(enc(Value::Int(-32)), [0xe0]);
        assert_eq!(enc(Value::Int(-33)), [0xd0, 0xdf]);
        assert_eq!(enc(Value::Str("a".repeat(31)))[0], 0xbf);
        assert_eq!(enc(Value::Str("a".repeat(32)))[..2], [0xd9, 32]);
        assert_eq!(enc(Value::Array(vec![Value::Nil; 16]))[..3], [0xdc, 0, 16]);
    }

    #[test]
    fn containers_strings_and_ext_roundtrip() {
        roundtrip(Value::from_pairs([
            ("s", Value::from("温度".repeat(40))),
            ("b", Value::Bin(vec![7; 300])),
            ("a", Value::Array((0..20).map(Value::from).collect())),
            ("f", Value::Float(-2.5)),
            ("e", Value::Ext(5, vec![1, 2, 3])),
            ("e1", Value::Ext(-1, vec![1])),
        ]));
        roundtrip(Value::Map(vec![(Value::Int(1), Value::Nil)]));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[0xc1]).is_err());
        assert!(decode(&[0xa2, 0xff, 0xfe]).is_err());
        assert!(decode(&[0x80, 0x00]).is_err());
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        let deep = vec![0x91u8; 100_000];
        assert!(decode(&deep).is_err());
    }
}
