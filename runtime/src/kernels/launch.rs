//! Launching WGSL templates on burn-wgpu tensors: the one place where source text is assembled
//! and where tensors become bindings.

use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::tensor::{DType, Shape};
use cubecl::prelude::KernelId;
use cubecl::server::{BufferBinding, KernelArguments, MetadataBindingInfo};
use cubecl::{CubeCount, CubeDim};

/// WGSL shared by every kernel (included once, never copied into kernel files).
const PRELUDE: &str = include_str!("../../../shaders/common.wgsl");

/// A WGSL kernel: its file text and the values of its `{{ name }}` placeholders. The id covers
/// the name and every value, so each variant compiles once.
#[derive(Debug)]
pub(crate) struct Wgsl {
    pub name: &'static str,
    pub text: &'static str,
    pub values: Vec<(&'static str, String)>,
    /// Global directives (`enable f16;`, `diagnostic(...);`), which must precede every
    /// declaration (the prelude's too).
    pub directives: Vec<String>,
}

impl Wgsl {
    pub fn new(name: &'static str, text: &'static str) -> Self {
        Self {
            name,
            text,
            values: Vec::new(),
            directives: Vec::new(),
        }
    }

    /// Heads the module with `enable <extension>;`.
    pub fn enable(mut self, extension: &'static str) -> Self {
        self.directives.push(format!("enable {extension};"));
        self
    }

    /// Heads the module with `diagnostic(severity, rule);` (e.g. `off, derivative_uniformity`).
    pub fn diagnostic(mut self, severity_and_rule: &'static str) -> Self {
        self.directives.push(format!("diagnostic({severity_and_rule});"));
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
        let directives: String = self.directives.iter().map(|d| format!("{d}\n")).collect();
        let mut template = SourceTemplate::new(directives + PRELUDE).add_template(self.text);
        for (key, value) in &self.values {
            template = template.register(*key, value.clone());
        }
        template
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.values.clone(), self.directives.clone()))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Enqueues `kernel` with one workgroup of `workgroup` threads per cube of `count`. Bindings
/// follow the order of `buffers`, then the params (`var<uniform> p: Params` at the next binding).
pub(crate) fn dispatch(
    like: &CubeTensor,
    kernel: Wgsl,
    workgroup: u32,
    count: CubeCount,
    buffers: Vec<BufferBinding>,
    params: Params,
) {
    let name = kernel.name;
    let _span = tracing::trace_span!("kernel", name).entered();
    crate::profile::named(name, || {
        like.client.launch(
            Box::new(SourceKernel::new(kernel, CubeDim::new_1d(workgroup))),
            count,
            KernelArguments::new().with_buffers(buffers).with_info(params.0),
        )
    });
}

/// A kernel's params struct, as the launch's metadata: cubecl stages it into a uniform buffer
/// bound after the storage buffers, and reuses one it staged before for the same bytes.
///
/// Not a storage buffer made with `create_from_slice`: that is a queue write, and cubecl
/// submits all pending work before every queue write to keep it ordered. Decode launches
/// kernels whose params change every token (attention's context length), so each such upload
/// used to split the step into another submission.
pub(crate) struct Params(MetadataBindingInfo);

/// The params of a launch: `params` as little-endian words (its `#[repr(C)]` struct mirrors
/// the WGSL one, whose size is a multiple of 16 bytes as uniform layout wants).
pub(crate) fn params<P: bytemuck::Pod>(params: &P) -> Params {
    let bytes = bytemuck::bytes_of(params);
    debug_assert_eq!(bytes.len() % 16, 0, "params structs are padded to 16 bytes");
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    Params(MetadataBindingInfo::custom(words))
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
