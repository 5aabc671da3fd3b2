//! Rotary position embedding on the leading `rotary_dim` dims of each head, with the NeoX
//! rotate-half pairing of the original MiniMax code: dims `i` and `i + rotary_dim/2` form a
//! pair rotated by `pos · θ^(-2i/rotary_dim)`; dims past `rotary_dim` pass through.

use burn::tensor::{Device, Tensor, TensorData};

/// cos and sin tables for positions `start..start + len`: each `[len, rotary_dim / 2]`.
pub fn tables(start: usize, len: usize, rotary_dim: usize, theta: f64, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let half = rotary_dim / 2;
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for pos in start..start + len {
        for i in 0..half {
            let inv_freq = 1.0 / theta.powf((2 * i) as f64 / rotary_dim as f64);
            let angle = pos as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [len, half]), device),
        Tensor::from_data(TensorData::new(sin, [len, half]), device),
    )
}

/// Rotates `x`.
///
/// # Shapes
/// `x`: `[T, H, D]`; `cos`, `sin`: `[T, rotary_dim / 2]`.
pub fn apply(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Tensor<3> {
    let [_, _, d] = x.dims();
    let half = cos.dims()[1];
    let cos = cos.clone().unsqueeze_dim::<3>(1);
    let sin = sin.clone().unsqueeze_dim::<3>(1);
    let x1 = x.clone().narrow(2, 0, half);
    let x2 = x.clone().narrow(2, half, half);
    let mut parts = vec![
        x1.clone() * cos.clone() - x2.clone() * sin.clone(),
        x2 * cos + x1 * sin,
    ];
    if 2 * half < d {
        parts.push(x.narrow(2, 2 * half, d - 2 * half));
    }
    Tensor::cat(parts, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_preserves_norm_and_passes_the_tail() {
        let device = Device::flex();
        let x = Tensor::<3>::from_data(
            TensorData::new((0..2 * 3 * 8).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), [2, 3, 8]),
            &device,
        );
        let (cos, sin) = tables(5, 2, 4, 10000.0, &device);
        let y = apply(x.clone(), &cos, &sin);
        // The last 4 dims are not rotated.
        let tail = (y.clone().narrow(2, 4, 4) - x.clone().narrow(2, 4, 4)).abs().max().into_scalar::<f32>();
        assert_eq!(tail, 0.0);
        // Rotating pairs keeps the norm of the rotated part.
        let n = |t: Tensor<3>| t.narrow(2, 0, 4).square().sum().into_scalar::<f32>();
        assert!((n(x) - n(y)).abs() < 1e-4);
    }

    #[test]
    fn position_zero_is_identity() {
        let device = Device::flex();
        let x = Tensor::<3>::ones([1, 2, 6], &device);
        let (cos, sin) = tables(0, 1, 6, 1e6, &device);
        let y = apply(x.clone(), &cos, &sin);
        assert!((y - x).abs().max().into_scalar::<f32>() < 1e-7);
    }
}
