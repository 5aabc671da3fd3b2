//! Every kernel's Rust `Params` against the `struct Params` of its WGSL source, field by
//! field: a parameter added on one side only would shift every field after it, and the kernel
//! would read garbage without any error. Both sides are read as text, so no list here can
//! drift from either.

/// `(name, type)` of each field of the first `struct Params { … }` in `src`, with Rust's
/// `pub` dropped and an array `[t; n]` expanded to `n` fields named `_`.
fn fields(src: &str, open: &str) -> Vec<(String, String)> {
    let body = src.split(open).nth(1).unwrap_or_else(|| panic!("no `{open}`")).split('}').next().unwrap();
    let mut out = Vec::new();
    for field in body.lines().map(|l| l.split("//").next().unwrap().trim().trim_end_matches(',')).filter(|l| !l.is_empty()) {
        let (name, ty) = field.split_once(':').unwrap_or_else(|| panic!("field `{field}`"));
        let (name, ty) = (name.trim().trim_start_matches("pub ").trim(), ty.trim());
        if let Some(array) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let (elem, n) = array.split_once(';').unwrap();
            for _ in 0..n.trim().parse::<usize>().unwrap() {
                out.push(("_".to_string(), elem.trim().to_string()));
            }
        } else {
            out.push((name.to_string(), ty.to_string()));
        }
    }
    out
}

macro_rules! kernels {
    ($($module:ident),* $(,)?) => {
        [$((
            stringify!($module),
            include_str!(concat!(stringify!($module), ".rs")),
            include_str!(concat!("../../../shaders/", stringify!($module), ".wgsl")),
            size_of::<super::$module::Params>(),
        )),*]
    };
}

#[test]
fn every_kernels_params_mirror_its_wgsl() {
    let mut all = kernels!(
        argmax,
        attention_decode,
        attention_prefill,
        lightning_decode,
        lightning_prefill,
        moe_gather,
        moe_route,
        moe_scatter,
        qgemm,
        qgemv,
        rms_norm,
        rope,
        stream_read,
    )
    .to_vec();
    // The cooperative-matrix tiles of qgemm take qgemm's params.
    all.push((
        "qgemm_coop",
        include_str!("qgemm.rs"),
        include_str!("../../../shaders/qgemm_coop.wgsl"),
        size_of::<super::qgemm::Params>(),
    ));
    for (kernel, rust, wgsl, size) in all {
        let (r, w) = (fields(rust, "pub struct Params {"), fields(wgsl, "struct Params {"));
        assert_eq!(r.len(), w.len(), "{kernel}: {r:?} against {w:?}");
        for ((rn, rt), (wn, wt)) in r.iter().zip(&w) {
            // Padding may be named differently on each side; everything else must agree.
            let padding = rn.starts_with('_') && wn.starts_with('_');
            assert!(padding || rn == wn, "{kernel}: field `{rn}` in Rust, `{wn}` in WGSL");
            assert_eq!(rt, wt, "{kernel}: field `{rn}` is {rt} in Rust, {wt} in WGSL");
        }
        // All fields are 4-byte scalars, and a uniform's size is a multiple of 16.
        assert_eq!(size, 4 * w.len(), "{kernel}");
        assert_eq!(size % 16, 0, "{kernel}: {size} bytes");
    }
}
