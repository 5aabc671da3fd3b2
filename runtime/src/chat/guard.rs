//! Checks around two minijinja 3.1 bugs that a chat template from a model file (or a message
//! fed to one) can trigger, both found by fuzzing (see FUZZING.md).
//!
//! - A namespace that holds itself (`{% set ns.a = ns %}`) makes every later print,
//!   comparison or `tojson` of it recurse until the stack overflows: a crash, not an error.
//!   Namespaces are minijinja's only mutable values, so every cycle passes through one.
//!   [`check_namespaces`] admits a template only if no namespace can become a value: each is
//!   made by `{% set NAME = namespace(…) %}` and used only through its attributes
//!   (`NAME.attr`, `NAME['attr']`, `{% set NAME.attr = … %}`). That is how chat templates use
//!   them; a template that passes a namespace around (`{{ ns }}`, `[ns]`, `m(ns)`) is refused.
//! - Format strings whose mapping key holds a multi-byte character (`'%(é)s' | format(…)`,
//!   `'{0[é]}'.format(…)`) panic in minijinja's format parser: see [`check_format_string`].

/// Refuses a format string with a mapping key (`%(` or `[`) and non-ASCII text: minijinja
/// reads the key a byte at a time and panics inside a multi-byte character. Format strings
/// may come from message content; templates use ASCII keys.
pub(super) fn check_format_string(format: &str) -> Result<(), minijinja::Error> {
    if !format.is_ascii() && (format.contains("%(") || format.contains('[')) {
        return Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, "format strings with keys must be ASCII"));
    }
    Ok(())
}

/// One identifier in template code, with what surrounds it.
struct Ident<'a> {
    name: &'a str,
    /// Its position among the identifiers of its tag.
    index: usize,
    /// The characters before and after it, spaces skipped (`\0` at either end).
    before: char,
    after: char,
    /// The character after `after` (to tell `=` from `==`).
    after2: char,
}

/// The identifiers of the tags (`{{ … }}`, `{% … %}`) of `source`, tag by tag; comments,
/// raw blocks and string literals are skipped.
fn tags(source: &str) -> Vec<Vec<Ident<'_>>> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(open) = rest.find('{') {
        rest = &rest[open..];
        let close = match rest.get(..2) {
            Some("{#") => {
                rest = rest.find("#}").map_or("", |end| &rest[end + 2..]);
                continue;
            }
            Some("{{") => "}}",
            Some("{%") => "%}",
            _ => {
                rest = &rest[1..];
                continue;
            }
        };
        let (code, after) = tag_code(&rest[2..], close);
        let idents = idents(code);
        rest = after;
        if idents.first().is_some_and(|i| i.name == "raw") {
            rest = skip_raw(rest);
        }
        out.push(idents);
    }
    out
}

/// The code of a tag up to `close` (outside string literals), and the text after it.
fn tag_code<'a>(text: &'a str, close: &str) -> (&'a str, &'a str) {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => quote = Some(c),
            None if text[i..].starts_with(close) => return (&text[..i], &text[i + 2..]),
            None => {}
        }
    }
    (text, "")
}

/// The text after the `{% endraw %}` that ends a raw block.
fn skip_raw(text: &str) -> &str {
    let mut rest = text;
    while let Some(at) = rest.find("{%") {
        let (code, after) = tag_code(&rest[at + 2..], "%}");
        if code.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()) == "endraw" {
            return after;
        }
        rest = &rest[at + 2..];
    }
    ""
}

/// The identifiers of one tag's code (string literals skipped).
fn idents(code: &str) -> Vec<Ident<'_>> {
    let chars: Vec<(usize, char)> = code.char_indices().collect();
    let next_non_space = |from: usize| chars[from..].iter().map(|&(_, c)| c).find(|c| !c.is_whitespace()).unwrap_or('\0');
    let mut out = Vec::new();
    let mut before = '\0';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        if c == '\'' || c == '"' {
            i += 1;
            while i < chars.len() && chars[i].1 != c {
                i += if chars[i].1 == '\\' { 2 } else { 1 };
            }
            before = c;
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].1.is_alphanumeric() || chars[i].1 == '_') {
                i += 1;
            }
            let end = chars.get(i).map_or(code.len(), |&(at, _)| at);
            let after_at = (i..chars.len()).find(|&j| !chars[j].1.is_whitespace()).unwrap_or(chars.len());
            let after = chars.get(after_at).map_or('\0', |&(_, c)| c);
            let after2 = if after_at < chars.len() { next_non_space(after_at + 1) } else { '\0' };
            out.push(Ident { name: &code[chars[start].0..end], index: out.len(), before, after, after2 });
            before = 'a';
        } else {
            if !c.is_whitespace() {
                before = c;
            }
            i += 1;
        }
    }
    out
}

/// Admits `source` only if none of its namespaces can become a value (see the module doc).
pub(super) fn check_namespaces(source: &str) -> Result<(), String> {
    let tags = tags(source);
    // `{% set NAME = namespace(…) %}` and `{% set NAME.attr = … %}` name the namespaces.
    let defines = |tag: &[Ident]| {
        tag.len() >= 3 && tag[0].name == "set" && tag[1].after == '=' && tag[2].name == "namespace" && tag[2].before == '='
    };
    let mut names: Vec<&str> = Vec::new();
    for tag in &tags {
        if tag.len() >= 2 && tag[0].name == "set" && (defines(tag) || tag[1].after == '.') {
            names.push(tag[1].name);
        }
    }
    for tag in &tags {
        for ident in tag.iter().filter(|i| i.before != '.') {
            if ident.name == "namespace" {
                if !(ident.index == 2 && defines(tag) && ident.after == '(') {
                    return Err("`namespace()` may only make the whole value of `{% set NAME = … %}`".into());
                }
            } else if names.contains(&ident.name) {
                let through_attribute = matches!(ident.after, '.' | '[');
                let assigned = ident.after == '=' && ident.after2 != '=';
                if !through_attribute && !assigned {
                    return Err(format!("the namespace `{}` may only be used through its attributes", ident.name));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_used_through_attributes_pass() {
        // As Qwen2.5's and DeepSeek's templates use them.
        let qwen = "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}{%- if ns.multi_step_tool and message.role == 'user' %}{%- set ns.multi_step_tool = false %}{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}{{ ns['last_query_index'] }}";
        assert_eq!(check_namespaces(qwen), Ok(()));
        let strings = "{% set ns = namespace(p='') %}{{ 'ns' ~ \"{{ ns }}\" }}{# {{ ns }} #}{% raw %}{{ ns }}{% endraw %}{% set ns.p = ns.p ~ 'x' %}";
        assert_eq!(check_namespaces(strings), Ok(()));
    }

    #[test]
    fn namespaces_as_values_are_refused() {
        for source in [
            "{% set x = namespace() %}{% set x.a = x %}{{ x }}",
            "{% set x = namespace() %}{% set x.a = [x] %}",
            "{% set x = namespace() %}{{ x | tojson }}",
            "{% set x = namespace() %}{% set y = x %}",
            "{% macro m(n) %}{% set n.a = n %}{% endmacro %}",
            "{% set x = namespace() %}{{ m(x) }}",
            "{% set l = [namespace()] %}",
            "{% set x = namespace() %}{% set x.a = namespace() %}",
            "{% set x = namespace() %}{% for y in [x] %}{% endfor %}",
            "{% set x = namespace() if true else 1 %}{{ namespace }}",
        ] {
            assert!(check_namespaces(source).is_err(), "{source}");
        }
    }
}
