//! Launching WGSL templates on burn-wgpu tensors: the one place where source text is assembled
//! and where tensors become bindings.

use std::collections::HashMap;
use std::sync::Mutex;

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::tensor::{DType, Shape};
use cubecl::prelude::KernelId;
use cubecl::server::{BufferBinding, Handle, KernelArguments};
use cubecl::{CubeCount, CubeDim, Device as CubeDevice};

/// WGSL shared by every kernel (included once, never copied into kernel files).
const PRELUDE: &str = include_str!("../../../shaders/common.wgsl");

/// A WGSL kernel: its file text and the values of its `{{ name }}` placeholders. The id covers
/// the name and every value, so each variant compiles once.
#[derive(Debug)]
pub(crate) struct Wgsl {
    pub name: &'static str,
    pub text: &'static str,
    pub values: Vec<(&'static str, String)>,
    /// WGSL `enable` extensions, which must precede every declaration (the prelude's too).
    pub enables: Vec<&'static str>,
}

impl Wgsl {
    pub fn new(name: &'static str, text: &'static str) -> Self {
        Self {
            name,
            text,
            values: Vec::new(),
            enables: Vec::new(),
        }
    }

    /// Heads the module with `enable <extension>;`.
    pub fn enable(mut self, extension: &'static str) -> Self {
        self.enables.push(extension);
        self
    }

    /// Sets placeholder `key` to `value`.
    pub fn with(mut self, key: &'static str, value: impl ToString) -> Self {
        self.values.push((key, value.to_string()));
        self
    }
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        let enables: String = self.enables.iter().map(|e| format!("enable {e};\n")).collect();
        let mut template = SourceTemplate::new(enables + PRELUDE).add_template(self.text);
        for (key, value) in &self.values {
            template = template.register(*key, value.clone());
        }
        template
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.values.clone(), self.enables.clone()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Enqueues `kernel` with one workgroup of `workgroup` threads per cube of `count`. Bindings
/// follow the order of `buffers`, the last one usually being the params.
pub(crate) fn dispatch(
    like: &CubeTensor,
    kernel: Wgsl,
    workgroup: u32,
    count: CubeCount,
    buffers: Vec<BufferBinding>,
) {
    let name = kernel.name;
    let _span = tracing::trace_span!("kernel", name).entered();
    crate::profile::named(name, || {
        like.client.launch(
            Box::new(SourceKernel::new(kernel, CubeDim::new_1d(workgroup))),
            count,
            KernelArguments::new().with_buffers(buffers),
        )
    });
}

/// A params struct as a storage buffer (no uniform usage: see DEVELOPERS.md).
///
/// Kernels only read their params, and decode launches the same kernels with the same params
/// token after token, so each distinct params value is uploaded once per device and its
/// buffer reused: an upload per launch costs host time on the path that bounds decode.
pub(crate) fn params<P: bytemuck::Pod>(like: &CubeTensor, params: &P) -> BufferBinding {
    type Uploaded = HashMap<Vec<u8>, Handle>;
    /// Distinct params values kept per device before the cache starts over (a long prefill
    /// in many chunk sizes, or attention decode at every length, makes new ones).
    const KEEP: usize = 4096;
    static UPLOADED: Mutex<Vec<(CubeDevice, Uploaded)>> = Mutex::new(Vec::new());
    let bytes = bytemuck::bytes_of(params);
    let mut uploaded = UPLOADED.lock().expect("params cache");
    let i = match uploaded.iter().position(|(d, _)| *d == like.device) {
        Some(i) => i,
        None => {
            uploaded.push((like.device.clone(), HashMap::new()));
            uploaded.len() - 1
        }
    };
    let cache = &mut uploaded[i].1;
    if cache.len() >= KEEP && !cache.contains_key(bytes) {
        cache.clear();
    }
    cache
        .entry(bytes.to_vec())
        .or_insert_with(|| like.client.create_from_slice(bytes))
        .clone()
        .binding()
}

/// A new, uninitialised contiguous tensor on the device of `like`.
pub(crate) fn empty(like: &CubeTensor, shape: impl Into<Shape>, dtype: DType) -> CubeTensor {
    let shape = shape.into();
    let handle = like.client.empty(shape.num_elements() * dtype.size());
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), shape, handle, dtype)
}

/// A contiguous tensor's binding (copies strided views first).
pub(crate) fn bind(t: CubeTensor) -> (CubeTensor, BufferBinding) {
    let t = into_contiguous(t);
    let binding = t.handle.clone().binding();
    (t, binding)
}

/// A 2-D grid of `n` workgroups: WebGPU caps each dimension at 65535, so large counts spill
/// into y. Kernels recover the linear index as `wid.x + wid.y * nwg.x` and skip the excess.
pub(crate) fn grid(n: u32) -> CubeCount {
    const MAX: u32 = 65535;
    if n <= MAX {
        CubeCount::Static(n.max(1), 1, 1)
    } else {
        CubeCount::Static(MAX, n.div_ceil(MAX), 1)
    }
}

/// The shape of a cube tensor as a vector.
pub(crate) fn dims(t: &CubeTensor) -> Vec<usize> {
    t.meta.shape().iter().copied().collect()
}
