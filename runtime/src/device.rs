//! Choosing where the model runs: a wgpu adapter (our WGSL kernels) or Burn's Flex CPU backend
//! (the references).

use std::str::FromStr;
use std::sync::OnceLock;

use burn::tensor::Device;

use crate::error::RuntimeError;

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// A hardware GPU when one exists; otherwise the CPU backend, with a notice. A software
    /// rasteriser (llvmpipe, SwiftShader) is slower than the CPU backend, so auto skips it.
    #[default]
    Auto,
    /// Any wgpu adapter, software ones included.
    Gpu,
    /// Burn's Flex CPU backend.
    Cpu,
    /// A wgpu adapter on exactly this graphics API (no fallback to another one).
    Api(GraphicsApi),
}

/// The native graphics APIs wgpu drives. Which exist depends on the platform: Vulkan on
/// Linux, Windows and Android; Metal on Apple; DX12 on Windows; GL (GLES/WebGL) widely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphicsApi {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl GraphicsApi {
    #[cfg(not(target_arch = "wasm32"))]
    fn wgpu(self) -> burn::tensor::wgpu::WgpuBackend {
        use burn::tensor::wgpu::WgpuBackend;
        match self {
            Self::Vulkan => WgpuBackend::Vulkan,
            Self::Metal => WgpuBackend::Metal,
            Self::Dx12 => WgpuBackend::Dx12,
            Self::Gl => WgpuBackend::Gl,
        }
    }
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            "vulkan" => Ok(Self::Api(GraphicsApi::Vulkan)),
            "metal" => Ok(Self::Api(GraphicsApi::Metal)),
            "dx12" => Ok(Self::Api(GraphicsApi::Dx12)),
            "gl" | "opengl" => Ok(Self::Api(GraphicsApi::Gl)),
            other => Err(format!(
                "unknown backend `{other}` (auto, gpu, cpu, vulkan, metal, dx12, gl)"
            )),
        }
    }
}

/// What a wgpu adapter is and what it allows.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_storage_buffers_per_shader_stage: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// Cooperative matrices (tensor cores) as prefill's matmuls use them: 16×16×16 products of
    /// f16 A and B into f32 C, in subgroups of exactly 32 invocations (`qgemm_coop`).
    pub cooperative_f16: bool,
}

impl AdapterSummary {
    fn new(setup: &burn::tensor::wgpu::WgpuSetup) -> Self {
        use burn::tensor::wgpu::wgpu::Features;
        let info = setup.adapter.get_info();
        let limits = setup.device.limits();
        let features = setup.device.features();
        let cooperative_f16 = cooperative_f16(setup, &info);
        Self {
            name: info.name,
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            max_buffer_size: limits.max_buffer_size,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size as u64,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            shader_f16: features.contains(Features::SHADER_F16),
            subgroups: features.contains(Features::SUBGROUP),
            cooperative_f16,
        }
    }
}

/// Whether the device offers what `qgemm_coop` needs (see [`AdapterSummary::cooperative_f16`]).
/// `MINIMAX_COOPMAT=0` turns the path off (to compare against the scalar tiles).
fn cooperative_f16(setup: &burn::tensor::wgpu::WgpuSetup, info: &burn::tensor::wgpu::wgpu::AdapterInfo) -> bool {
    use burn::tensor::wgpu::wgpu::{CooperativeScalarType as T, Features};
    if std::env::var("MINIMAX_COOPMAT").is_ok_and(|v| v == "0") {
        return false;
    }
    let features = setup.device.features();
    if !features.contains(Features::EXPERIMENTAL_COOPERATIVE_MATRIX | Features::SHADER_F16) {
        return false;
    }
    // The kernel assigns tiles to subgroups by invocation index / 32, and stages 30 KiB of
    // tiles in workgroup memory (WebGPU's default limit is 16 KiB; native adapters give more).
    if info.subgroup_min_size != 32 || info.subgroup_max_size != 32 {
        return false;
    }
    if setup.device.limits().max_compute_workgroup_storage_size < 32 * 1024 {
        return false;
    }
    setup.adapter.cooperative_matrix_properties().iter().any(|c| {
        (c.m_size, c.n_size, c.k_size) == (16, 16, 16) && c.ab_type == T::F16 && c.cr_type == T::F32
    })
}

/// The device the model runs on, with what we know about it.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// `None` on the CPU backend.
    pub adapter: Option<AdapterSummary>,
    /// A one-line message for the user when auto fell back to the CPU.
    pub notice: Option<String>,
}

impl Selected {
    pub fn cpu(notice: Option<String>) -> Self {
        Self {
            device: Device::flex(),
            adapter: None,
            notice,
        }
    }

    /// Short description: adapter name and API, or "CPU (Flex)".
    pub fn describe(&self) -> String {
        match &self.adapter {
            Some(a) => format!("{} ({}, {})", a.name, a.backend, a.device_type),
            None => "CPU (Burn Flex)".into(),
        }
    }
}

/// Launches per queue submission (see [`wgpu_device`]).
#[cfg(not(target_arch = "wasm32"))]
const DECODE_TASKS_PER_SUBMIT: usize = 16;

/// The process-wide wgpu device: Burn registers one runtime per adapter selector, so it is
/// initialised once and cloned afterwards. The first request's graphics API wins.
static WGPU: OnceLock<Result<(Device, AdapterSummary), String>> = OnceLock::new();

/// The wgpu device and queue behind [`WGPU`], for copies cubecl does not make (expert
/// uploads from staging buffers). Native only.
#[cfg(not(target_arch = "wasm32"))]
static QUEUE: OnceLock<(burn::tensor::wgpu::wgpu::Device, burn::tensor::wgpu::wgpu::Queue)> = OnceLock::new();

/// The process's wgpu device and queue, once a wgpu device was selected (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn wgpu_queue() -> Option<(burn::tensor::wgpu::wgpu::Device, burn::tensor::wgpu::wgpu::Queue)> {
    QUEUE.get().cloned()
}

/// Destroys the process's wgpu device, as a driver reset would lose it: for tests of how a
/// lost device is reported (`MINIMAX_LOSE_DEVICE_AFTER`, see the CLI's `run`). Returns
/// whether there was one.
#[cfg(not(target_arch = "wasm32"))]
pub fn lose_device() -> bool {
    QUEUE.get().map(|(device, _)| device.destroy()).is_some()
}

#[cfg(not(target_arch = "wasm32"))]
fn wgpu_device(api: Option<GraphicsApi>) -> Result<(Device, AdapterSummary), RuntimeError> {
    WGPU.get_or_init(|| {
        let mut options = Device::wgpu_options();
        // Launches per submission: cubecl's default is 32. Decode is a chain of ~110 short
        // dependent launches, and a smaller batch starts the GPU sooner: on an H100, f16 decode
        // ran at 254.5 tokens/s with 16, 245.5 with 32 and 181.4 with 128 (BENCHMARKS.md,
        // 2026-12-07 evening). CUBECL_WGPU_MAX_TASKS still decides when it is set.
        if std::env::var_os("CUBECL_WGPU_MAX_TASKS").is_none() {
            options = options.tasks_max(DECODE_TASKS_PER_SUBMIT);
        }
        if let Some(api) = api {
            options = options.graphics_api(api.wgpu());
        }
        // Burn's init panics deep inside when no adapter exists; catch that as "no GPU".
        let init = std::panic::catch_unwind(|| options.init_with_setup());
        match init {
            Ok(Ok((device, setup))) => {
                let _ = QUEUE.set((setup.device.clone(), setup.queue.clone()));
                Ok((device, AdapterSummary::new(&setup)))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no wgpu adapter".into()),
        }
    })
    .clone()
    .map_err(RuntimeError::Gpu)
}

#[cfg(target_arch = "wasm32")]
async fn wgpu_device_async() -> Result<(Device, AdapterSummary), RuntimeError> {
    if let Some(done) = WGPU.get() {
        return done.clone().map_err(RuntimeError::Gpu);
    }
    let result = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map(|(device, setup)| (device, AdapterSummary::new(&setup)))
        .map_err(|e| e.to_string());
    let _ = WGPU.set(result.clone());
    result.map_err(RuntimeError::Gpu)
}

/// Whether the machine has a wgpu adapter that is real hardware (not a CPU rasteriser).
#[cfg(not(target_arch = "wasm32"))]
pub fn has_hardware_adapter() -> bool {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .any(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
}

/// Selects the device for `choice` (native).
#[cfg(not(target_arch = "wasm32"))]
pub fn select(choice: BackendChoice) -> Result<Selected, RuntimeError> {
    let gpu = |api| {
        wgpu_device(api).map(|(device, adapter)| Selected {
            device,
            adapter: Some(adapter),
            notice: None,
        })
    };
    match choice {
        BackendChoice::Cpu => Ok(Selected::cpu(None)),
        BackendChoice::Gpu => gpu(None),
        BackendChoice::Api(api) => gpu(Some(api)).map_err(|e| {
            RuntimeError::Gpu(format!("no {api:?} adapter in this build or on this machine ({e})"))
        }),
        BackendChoice::Auto => {
            if has_hardware_adapter()
                && let Ok(selected) = gpu(None)
            {
                return Ok(selected);
            }
            Ok(Selected::cpu(Some(
                "no GPU adapter found; running on the CPU backend (use --backend gpu to force a software adapter)".into(),
            )))
        }
    }
}

/// Selects the device for `choice` (browser: WebGPU only offers what the page allows).
#[cfg(target_arch = "wasm32")]
pub async fn select(choice: BackendChoice) -> Result<Selected, RuntimeError> {
    match choice {
        BackendChoice::Cpu => Ok(Selected::cpu(None)),
        // The browser has one API, WebGPU; a native API name means "the GPU".
        BackendChoice::Gpu | BackendChoice::Api(_) | BackendChoice::Auto => match wgpu_device_async().await {
            Ok((device, adapter)) => Ok(Selected {
                device,
                adapter: Some(adapter),
                notice: None,
            }),
            Err(e) if choice == BackendChoice::Auto => Ok(Selected::cpu(Some(format!(
                "WebGPU unavailable ({e}); running on the CPU backend"
            )))),
            Err(e) => Err(e),
        },
    }
}

/// What the process's wgpu adapter offers, once a wgpu device was selected.
fn adapter() -> Option<&'static AdapterSummary> {
    WGPU.get().and_then(|r| r.as_ref().ok()).map(|(_, a)| a)
}

/// Whether the process's wgpu device has subgroup operations (kernels pick their reduction by
/// it). False before a wgpu device was selected.
pub fn has_subgroups() -> bool {
    adapter().is_some_and(|a| a.subgroups)
}

/// The most invocations a workgroup may have on the process's wgpu device (WebGPU's default,
/// 256, before one was selected).
pub fn max_workgroup_threads() -> u32 {
    adapter().map_or(256, |a| a.max_compute_invocations_per_workgroup)
}

/// The process's wgpu adapter's storage-binding limit, once a wgpu device was selected.
pub fn max_binding_bytes() -> Option<u64> {
    adapter().map(|a| a.max_storage_buffer_binding_size)
}

/// Whether the process's wgpu device runs `qgemm_coop` (cooperative f16 matrices). False
/// before a wgpu device was selected.
pub fn has_cooperative_matrices() -> bool {
    adapter().is_some_and(|a| a.cooperative_f16)
}

/// The wgpu device for tests, or `None` when the machine has no adapter at all: the test then
/// skips `what`, saying so loudly. With `MINIMAX_REQUIRE_GPU=1` (set by `tests/run`) or under
/// CI (`CI` set, as `.ci/run` runs; both install lavapipe) a missing adapter is a failure
/// instead, so that no GPU test passes by skipping there.
#[cfg(not(target_arch = "wasm32"))]
pub fn test_gpu_or_skip(what: &str) -> Option<Device> {
    let device = wgpu_device(None).ok().map(|(d, _)| d);
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
    if device.is_none() {
        if set("MINIMAX_REQUIRE_GPU") || set("CI") {
            panic!("no wgpu adapter, and GPU tests may not skip here (MINIMAX_REQUIRE_GPU or CI): {what} (is mesa-vulkan-drivers installed?)");
        }
        eprintln!("!!! no wgpu adapter: {what} SKIPPED (install mesa-vulkan-drivers)");
    }
    device
}

/// [`test_gpu_or_skip`] for a test that says nothing of its own.
#[cfg(not(target_arch = "wasm32"))]
pub fn test_gpu() -> Option<Device> {
    test_gpu_or_skip("GPU test")
}
