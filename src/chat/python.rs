//! Values spelled the way Python spells them, for templates written against
//! jinja2: what `{{ x }}` prints (`str(x)`: `None`, `True`, `['a', 1.0]`),
//! and `json.dumps`, which transformers installs as the `tojson` filter.
//!
//! minijinja's own spellings are Rust's and JSON's (`none`, `true`,
//! `["a", 1.0]`, and an HTML-escaping `tojson`), so a template that prints a
//! boolean or a dict, or serializes tool schemas, would render differently
//! from transformers without these.

use minijinja::value::ValueKind;
use minijinja::{Error, ErrorKind, Value};
use unicode_general_category::{get_general_category, GeneralCategory};

/// Deepest nesting printed or serialized: Python stops at its recursion
/// limit; without one, a template nesting a list in itself a million times
/// (`namespace` makes that possible) would overflow the stack.
const MAX_DEPTH: usize = 128;

/// Longest text one `str`/`tojson` call may produce: the engine's fuel is
/// charged for output only after it exists, and a list repeating one large
/// string (`[s] * n`) prints far more than it costs to build.
const MAX_OUTPUT_BYTES: usize = 64 << 20;

fn too_deep() -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("value nested deeper than {MAX_DEPTH} levels"))
}

fn too_long_error() -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("value prints to over {MAX_OUTPUT_BYTES} bytes"))
}

fn too_long(out: &str) -> Result<(), Error> {
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(too_long_error());
    }
    Ok(())
}

/// `str(value)`: strings as they are, everything else as `repr`.
pub fn str(value: &Value) -> Result<String, Error> {
    match value.as_str() {
        Some(s) if value.kind() == ValueKind::String => Ok(s.to_string()),
        _ => {
            let mut out = String::new();
            repr(value, 0, &mut out)?;
            Ok(out)
        }
    }
}

/// `repr(value)` for the JSON-like values templates see. Objects without a
/// Python counterpart (namespaces, macros, loop state) keep minijinja's text.
fn repr(value: &Value, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    match value.kind() {
        ValueKind::Undefined => {}
        ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::Number => number(value, out, FloatStyle::Repr),
        ValueKind::String => string_repr(value.as_str().unwrap_or_default(), out),
        ValueKind::Seq => {
            out.push('[');
            for (i, item) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&item, depth + 1, out)?;
                too_long(out)?;
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            for (i, key) in value.try_iter().into_iter().flatten().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                repr(&key, depth + 1, out)?;
                out.push_str(": ");
                repr(&value.get_item(&key).unwrap_or_default(), depth + 1, out)?;
                too_long(out)?;
            }
            out.push('}');
        }
        _ => {
            let mut bounded = Bounded { out };
            std::fmt::Write::write_fmt(&mut bounded, format_args!("{value}")).map_err(|_| too_long_error())?;
        }
    }
    Ok(())
}

/// A `String` that refuses to grow past [`MAX_OUTPUT_BYTES`], for minijinja's
/// own printing of objects (`[s] * n` is one), which has no limit.
struct Bounded<'a> {
    out: &'a mut String,
}

impl std::fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.out.len() + s.len() > MAX_OUTPUT_BYTES {
            return Err(std::fmt::Error);
        }
        self.out.push_str(s);
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FloatStyle {
    /// `repr(float)`: `nan`, `inf`.
    Repr,
    /// `json.dumps(float)`: `NaN`, `Infinity`.
    Json,
}

fn number(value: &Value, out: &mut String, style: FloatStyle) {
    if value.is_integer() {
        out.push_str(&value.to_string());
    } else if let Ok(x) = f64::try_from(value.clone()) {
        float(x, out, style);
    } else {
        out.push_str(&value.to_string());
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, positional
/// for decimal exponents -4..16, scientific (`1e-05`, `1.5e+16`) otherwise.
fn float(x: f64, out: &mut String, style: FloatStyle) {
    if x.is_nan() {
        out.push_str(if style == FloatStyle::Json { "NaN" } else { "nan" });
        return;
    }
    if x.is_infinite() {
        out.push_str(match (style, x > 0.0) {
            (FloatStyle::Json, true) => "Infinity",
            (FloatStyle::Json, false) => "-Infinity",
            (FloatStyle::Repr, true) => "inf",
            (FloatStyle::Repr, false) => "-inf",
        });
        return;
    }
    if x.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
            out.push_str(&digits);
        } else {
            let int_len = exponent as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', int_len - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!("e{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs()));
    }
}

/// `str.isprintable` for one character: everything except the control,
/// format, surrogate, private-use, unassigned and separator categories (the
/// plain space excepted).
fn is_printable(c: char) -> bool {
    use GeneralCategory as G;
    c == ' '
        || !matches!(
            get_general_category(c),
            G::Control
                | G::Format
                | G::Surrogate
                | G::PrivateUse
                | G::Unassigned
                | G::LineSeparator
                | G::ParagraphSeparator
                | G::SpaceSeparator
        )
}

/// `repr(str)`: single quotes unless the text has a single quote and no
/// double quote; `\n`, `\r`, `\t`, `\\` and the quote escaped, other
/// unprintable characters as `\xNN`, `\uNNNN` or `\UNNNNNNNN`.
fn string_repr(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if is_printable(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push(quote);
}

/// The options of Python's `json.dumps` that transformers' `tojson` passes on.
pub struct JsonOptions {
    pub ensure_ascii: bool,
    /// `None`: everything on one line; `Some(unit)`: one item per line,
    /// indented by `unit` per level (an int `n` is `n` spaces).
    pub indent: Option<String>,
    /// Between items and between a key and its value.
    pub separators: (String, String),
    pub sort_keys: bool,
}

impl JsonOptions {
    /// `json.dumps`'s defaults for these options, given the indent: the item
    /// separator is `", "` on one line and `","` when indented.
    pub fn new(indent: Option<String>) -> JsonOptions {
        let item = if indent.is_some() { "," } else { ", " };
        JsonOptions { ensure_ascii: false, indent, separators: (item.into(), ": ".into()), sort_keys: false }
    }
}

/// `json.dumps(value, ...)`. Values JSON has no spelling for (undefined,
/// iterators, objects) are errors, as Python's `TypeError` is.
pub fn json_dumps(value: &Value, options: &JsonOptions) -> Result<String, Error> {
    let mut out = String::new();
    json_value(value, options, 0, &mut out)?;
    Ok(out)
}

fn not_serializable(value: &Value) -> Error {
    let kind = match value.kind() {
        ValueKind::Undefined => "Undefined".to_string(),
        kind => kind.to_string(),
    };
    Error::new(ErrorKind::InvalidOperation, format!("tojson: object of type {kind} is not JSON serializable"))
}

fn json_value(value: &Value, options: &JsonOptions, depth: usize, out: &mut String) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => number(value, out, FloatStyle::Json),
        ValueKind::String => json_string(value.as_str().unwrap_or_default(), options.ensure_ascii, out),
        ValueKind::Seq => {
            let items: Vec<Value> = value.try_iter()?.collect();
            json_container(('[', ']'), items.len(), options, depth, out, |i, out| {
                json_value(&items[i], options, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let name = json_key(&key)?;
                entries.push((name, value.get_item(&key)?));
            }
            if options.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            json_container(('{', '}'), entries.len(), options, depth, out, |i, out| {
                json_string(&entries[i].0, options.ensure_ascii, out);
                out.push_str(&options.separators.1);
                json_value(&entries[i].1, options, depth + 1, out)
            })?;
        }
        _ => return Err(not_serializable(value)),
    }
    Ok(())
}

/// A map key as `json.dumps` writes it: strings as they are; numbers,
/// booleans and None as their JSON text.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::Number | ValueKind::Bool | ValueKind::None => {
            let mut out = String::new();
            json_value(key, &JsonOptions::new(None), 0, &mut out)?;
            Ok(out)
        }
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {}", key.kind()),
        )),
    }
}

fn json_container(
    brackets: (char, char),
    len: usize,
    options: &JsonOptions,
    depth: usize,
    out: &mut String,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(brackets.0);
    if len == 0 {
        out.push(brackets.1);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(unit) = &options.indent {
            out.push('\n');
            for _ in 0..level {
                out.push_str(unit);
            }
        }
    };
    for i in 0..len {
        if i > 0 {
            out.push_str(&options.separators.0);
        }
        newline(out, depth + 1);
        item(i, out)?;
        too_long(out)?;
    }
    newline(out, depth);
    out.push(brackets.1);
    Ok(())
}

/// A JSON string as Python's encoder writes it: `"`, `\` and the control
/// characters escaped (`\n`, `\r`, `\t`, `\b`, `\f`, else `\u00XX`), and with
/// `ensure_ascii` every non-ASCII character as `\uXXXX` (UTF-16 surrogate
/// pairs above U+FFFF).
fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: &str) -> Value {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn floats_as_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (-0.0, "-0.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (123.456, "123.456"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (f64::INFINITY, "inf"),
        ];
        for (x, want) in cases {
            let mut out = String::new();
            float(x, &mut out, FloatStyle::Repr);
            assert_eq!(out, want, "{x:e}");
        }
    }

    #[test]
    fn str_and_repr() {
        assert_eq!(
            str(&v(r#"{"a": [1, 2.5, true, null, "it's"], "b": "x\ny"}"#)).unwrap(),
            r#"{'a': [1, 2.5, True, None, "it's"], 'b': 'x\ny'}"#
        );
        assert_eq!(str(&Value::from("plain")).unwrap(), "plain");
        let mut out = String::new();
        repr(&Value::from("a'b\"c\u{7}\u{2028}"), 0, &mut out).unwrap();
        assert_eq!(out, r#"'a\'b"c\x07\u2028'"#);
    }

    #[test]
    fn json_dumps_like_python() {
        let value = v(r#"{"name": "café \"q\"", "n": [1, 2.0, null, false], "e": {}, "l": []}"#);
        assert_eq!(
            json_dumps(&value, &JsonOptions::new(None)).unwrap(),
            r#"{"name": "café \"q\"", "n": [1, 2.0, null, false], "e": {}, "l": []}"#
        );
        let indented = JsonOptions::new(Some("  ".into()));
        assert_eq!(
            json_dumps(&v(r#"{"a": [1, {}], "b": 2}"#), &indented).unwrap(),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": 2\n}"
        );
        let ascii = JsonOptions { ensure_ascii: true, sort_keys: true, ..JsonOptions::new(None) };
        assert_eq!(
            json_dumps(&v(r#"{"z": "é😀\u0001", "a": 1}"#), &ascii).unwrap(),
            r#"{"a": 1, "z": "\u00e9\ud83d\ude00\u0001"}"#
        );
        assert!(json_dumps(&Value::UNDEFINED, &JsonOptions::new(None))
            .unwrap_err()
            .to_string()
            .contains("not JSON serializable"));
    }

    #[test]
    fn deep_or_huge_values_are_errors_not_crashes() {
        let mut deep = Value::from(1);
        for _ in 0..1000 {
            deep = Value::from(vec![deep]);
        }
        assert!(str(&deep).unwrap_err().to_string().contains("nested deeper"));
        assert!(json_dumps(&deep, &JsonOptions::new(None)).unwrap_err().to_string().contains("nested deeper"));
        let big = Value::from("x".repeat(1 << 20));
        let many = Value::from(vec![big; 100]);
        assert!(str(&many).unwrap_err().to_string().contains("prints to over"));
        assert!(json_dumps(&many, &JsonOptions::new(None)).unwrap_err().to_string().contains("prints to over"));
    }
}
