//! The uniform structs of `shaders/*.wgsl`, field for field. WGSL lays out a struct of 4-byte
//! scalars in declaration order, padded to 16 bytes; each struct here writes its words in that
//! order, so the two definitions can be checked side by side.

/// Bytes of a uniform made of 4-byte words.
fn bytes<const N: usize>(words: [u32; N]) -> Vec<u8> {
    bytemuck::cast_slice(&words).to_vec()
}

/// `MaskParams` of `mask_pivot.wgsl`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaskParams {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub planes: u32,
    pub y_batch: u32,
    pub mask_batch: u32,
    pub mask_channels: u32,
    pub inv_alpha: f32,
    pub gain_z: f32,
    pub gain_y: f32,
}

impl MaskParams {
    pub fn to_bytes(self) -> Vec<u8> {
        bytes([
            self.width,
            self.height,
            self.channels,
            self.planes,
            self.y_batch,
            self.mask_batch,
            self.mask_channels,
            0,
            self.inv_alpha.to_bits(),
            self.gain_z.to_bits(),
            self.gain_y.to_bits(),
            0,
        ])
    }
}

/// `SrParams` of `sr_pivot.wgsl`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SrParams {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub planes: u32,
    pub y_batch: u32,
    pub factor: u32,
    pub inv_alpha: f32,
    pub gain_z: f32,
    pub gain_y: f32,
}

impl SrParams {
    pub fn to_bytes(self) -> Vec<u8> {
        bytes([
            self.width,
            self.height,
            self.channels,
            self.planes,
            self.y_batch,
            self.factor,
            0,
            0,
            self.inv_alpha.to_bits(),
            self.gain_z.to_bits(),
            self.gain_y.to_bits(),
            0,
        ])
    }
}

/// `PlaneParams` of `fft_pack.wgsl` and `fft_unpack.wgsl`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlaneParams {
    pub width: u32,
    pub height: u32,
    pub planes: u32,
    pub scale: f32,
}

impl PlaneParams {
    pub fn to_bytes(self) -> Vec<u8> {
        bytes([
            self.width,
            self.height,
            self.planes,
            0,
            self.scale.to_bits(),
            0,
            0,
            0,
        ])
    }
}

/// `FftParams` of `fft_pass.wgsl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FftParams {
    pub n: u32,
    pub radix: u32,
    pub ns: u32,
    pub lines: u32,
    pub lines_per_plane: u32,
    pub line_step: u32,
    pub plane_size: u32,
    pub elem_stride: u32,
    pub inverse: u32,
}

impl FftParams {
    pub fn to_bytes(self) -> Vec<u8> {
        bytes([
            self.n,
            self.radix,
            self.ns,
            self.lines,
            self.lines_per_plane,
            self.line_step,
            self.plane_size,
            self.elem_stride,
            self.inverse,
            0,
            0,
            0,
        ])
    }
}

/// `CombineParams` of `blur_combine.wgsl`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CombineParams {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub planes: u32,
    pub y_batch: u32,
    pub p: f32,
    pub q: f32,
    pub inv_size: f32,
}

impl CombineParams {
    pub fn to_bytes(self) -> Vec<u8> {
        bytes([
            self.width,
            self.height,
            self.channels,
            self.planes,
            self.y_batch,
            0,
            0,
            0,
            self.p.to_bits(),
            self.q.to_bits(),
            self.inv_size.to_bits(),
            0,
        ])
    }
}

/// `LincombParams` of `lincomb.wgsl`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LincombParams {
    pub width: u32,
    pub height: u32,
    pub planes: u32,
    pub coefficients: [f32; 4],
}

impl LincombParams {
    pub fn to_bytes(self) -> Vec<u8> {
        let [c0, c1, c2, c3] = self.coefficients;
        bytes([
            self.width,
            self.height,
            self.planes,
            0,
            c0.to_bits(),
            c1.to_bits(),
            c2.to_bits(),
            c3.to_bits(),
        ])
    }
}
