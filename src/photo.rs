//! Photos in and out: decoding with EXIF orientation applied, 16-bit / grayscale / alpha handled,
//! and saving that keeps EXIF, never overwrites silently and writes atomically.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder as _, ImageEncoder as _, ImageFormat, ImageReader};

use crate::{Error, Result};

/// Photos larger than this (in pixels) are refused with a clear message instead of exhausting
/// memory (a 100-megapixel photo already needs ~1.2 GB as f32 RGB).
pub const MAX_PIXELS: u64 = 100_000_000;

/// An RGB image in `[0, 1]`, interleaved, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width × height × 3` values in `[0, 1]`.
    pub data: Vec<f32>,
}

impl RgbImage {
    /// A black image.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0.0; width * height * 3],
        }
    }

    /// Wraps interleaved data, checking its length.
    pub fn from_data(width: usize, height: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != width * height * 3 {
            return Err(Error::shape(
                "RGB image data",
                width * height * 3,
                data.len(),
            ));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// The pixel at `(x, y)`.
    pub fn pixel(&self, x: usize, y: usize) -> [f32; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// The `w × h` region with top-left corner `(x, y)` (must lie inside the image).
    pub fn crop(&self, x: usize, y: usize, w: usize, h: usize) -> Self {
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            let start = (row * self.width + x) * 3;
            data.extend_from_slice(&self.data[start..start + w * 3]);
        }
        Self {
            width: w,
            height: h,
            data,
        }
    }

    /// 8-bit sRGB bytes (RGB, interleaved), rounded.
    pub fn to_rgb8(&self) -> Vec<u8> {
        self.data.iter().map(|&v| to_u8(v)).collect()
    }
}

/// `[0, 1]` to a rounded byte.
pub fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// `[0, 1]` to a rounded 16-bit word.
pub fn to_u16(v: f32) -> u16 {
    (v.clamp(0.0, 1.0) * 65535.0).round() as u16
}

/// How the values of a [`Pixels`] buffer are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// 8 bits per channel (JPEG, most PNG and WebP files).
    U8,
    /// 16 bits per channel (16-bit PNG and TIFF).
    U16,
    /// 32-bit float (simulated measurements, computed images).
    F32,
}

impl Depth {
    /// Bytes per channel value.
    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::F32 => 4,
        }
    }
}

/// Read access to an RGB image in `[0, 1]`, interleaved, row-major, whatever its storage:
/// restorations read whole photos through it and make float copies only of the regions they
/// work on.
pub trait Raster: std::fmt::Debug + Sync {
    /// Width in pixels.
    fn width(&self) -> usize;
    /// Height in pixels.
    fn height(&self) -> usize;
    /// Value `i` of the interleaved data (`(y × width + x) × 3 + channel`), in `[0, 1]`.
    fn value(&self, i: usize) -> f32;
    /// How the values are stored.
    fn depth(&self) -> Depth;

    /// The `w × h` region with top-left corner `(x, y)` as floats (must lie inside the image).
    fn crop_rgb(&self, x: usize, y: usize, w: usize, h: usize) -> RgbImage {
        let mut data = Vec::with_capacity(w * h * 3);
        for row in y..y + h {
            let start = (row * self.width() + x) * 3;
            data.extend((start..start + w * 3).map(|i| self.value(i)));
        }
        RgbImage {
            width: w,
            height: h,
            data,
        }
    }

    /// The whole image as floats (a copy; for small images).
    fn to_rgb(&self) -> RgbImage {
        self.crop_rgb(0, 0, self.width(), self.height())
    }

    /// The image in the same storage, owned.
    fn to_pixels(&self) -> Pixels;

    /// Whether every value is finite (integer storage always is).
    fn all_finite(&self) -> bool {
        true
    }

    /// The values as bytes, when stored as 8 bits (lets encoders skip the arithmetic).
    fn as_u8(&self) -> Option<&[u8]> {
        None
    }
}

/// Forwards every method, so shared and borrowed images read the same way.
macro_rules! forward_raster {
    ($($ty:ty),*) => {$(
        impl<T: Raster + Send + ?Sized> Raster for $ty {
            fn width(&self) -> usize {
                (**self).width()
            }

            fn height(&self) -> usize {
                (**self).height()
            }

            fn value(&self, i: usize) -> f32 {
                (**self).value(i)
            }

            fn depth(&self) -> Depth {
                (**self).depth()
            }

            fn crop_rgb(&self, x: usize, y: usize, w: usize, h: usize) -> RgbImage {
                (**self).crop_rgb(x, y, w, h)
            }

            fn to_rgb(&self) -> RgbImage {
                (**self).to_rgb()
            }

            fn to_pixels(&self) -> Pixels {
                (**self).to_pixels()
            }

            fn all_finite(&self) -> bool {
                (**self).all_finite()
            }

            fn as_u8(&self) -> Option<&[u8]> {
                (**self).as_u8()
            }
        }
    )*};
}

forward_raster!(&T, std::sync::Arc<T>);

impl Raster for RgbImage {
    fn width(&self) -> usize {
        self.width
    }

    fn height(&self) -> usize {
        self.height
    }

    fn value(&self, i: usize) -> f32 {
        self.data[i]
    }

    fn depth(&self) -> Depth {
        Depth::F32
    }

    fn crop_rgb(&self, x: usize, y: usize, w: usize, h: usize) -> RgbImage {
        self.crop(x, y, w, h)
    }

    fn to_rgb(&self) -> RgbImage {
        self.clone()
    }

    fn to_pixels(&self) -> Pixels {
        Pixels::F32(self.clone())
    }

    fn all_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

/// A whole-photo RGB buffer in the photo's own bit depth: a 24-megapixel JPEG takes 72 MB as
/// bytes where float RGB would take 288 MB.
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 8 bits per channel.
    U8 {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// `width × height × 3` values, 255 = 1.
        data: Vec<u8>,
    },
    /// 16 bits per channel.
    U16 {
        /// Width in pixels.
        width: usize,
        /// Height in pixels.
        height: usize,
        /// `width × height × 3` values, 65535 = 1.
        data: Vec<u16>,
    },
    /// Floats.
    F32(RgbImage),
}

impl Pixels {
    /// A black image in `depth`.
    pub fn new(width: usize, height: usize, depth: Depth) -> Self {
        let n = width * height * 3;
        match depth {
            Depth::U8 => Self::U8 {
                width,
                height,
                data: vec![0; n],
            },
            Depth::U16 => Self::U16 {
                width,
                height,
                data: vec![0; n],
            },
            Depth::F32 => Self::F32(RgbImage::new(width, height)),
        }
    }

    /// `rgb` stored in `depth` (rounded for the integer depths).
    pub fn quantised(rgb: RgbImage, depth: Depth) -> Self {
        let (width, height) = (rgb.width, rgb.height);
        match depth {
            Depth::U8 => Self::U8 {
                width,
                height,
                data: rgb.data.iter().map(|&v| to_u8(v)).collect(),
            },
            Depth::U16 => Self::U16 {
                width,
                height,
                data: rgb.data.iter().map(|&v| to_u16(v)).collect(),
            },
            Depth::F32 => Self::F32(rgb),
        }
    }

    /// Sets value `i` (see [`Raster::value`]), clamped to `[0, 1]` and rounded to the storage.
    pub fn set(&mut self, i: usize, v: f32) {
        match self {
            Self::U8 { data, .. } => data[i] = to_u8(v),
            Self::U16 { data, .. } => data[i] = to_u16(v),
            Self::F32(rgb) => rgb.data[i] = v.clamp(0.0, 1.0),
        }
    }

    /// The image as floats, without a copy when it already is.
    pub fn into_rgb(self) -> RgbImage {
        match self {
            Self::F32(rgb) => rgb,
            other => other.to_rgb(),
        }
    }

    /// The float image when stored as floats.
    pub fn as_rgb(&self) -> Option<&RgbImage> {
        match self {
            Self::F32(rgb) => Some(rgb),
            _ => None,
        }
    }

    /// The float image, borrowed when stored as floats and converted otherwise.
    pub fn rgb(&self) -> std::borrow::Cow<'_, RgbImage> {
        match self {
            Self::F32(rgb) => std::borrow::Cow::Borrowed(rgb),
            other => std::borrow::Cow::Owned(other.to_rgb()),
        }
    }

    /// 8-bit values (RGB, interleaved), rounded; no arithmetic when already 8-bit.
    pub fn to_rgb8(&self) -> Vec<u8> {
        match self {
            Self::U8 { data, .. } => data.clone(),
            Self::U16 { data, .. } => data
                .iter()
                .map(|&v| to_u8(f32::from(v) / 65535.0))
                .collect(),
            Self::F32(rgb) => rgb.to_rgb8(),
        }
    }

    /// Bytes the values take.
    pub fn bytes(&self) -> usize {
        self.width() * self.height() * 3 * self.depth().bytes()
    }
}

impl From<RgbImage> for Pixels {
    fn from(rgb: RgbImage) -> Self {
        Self::F32(rgb)
    }
}

impl Raster for Pixels {
    fn width(&self) -> usize {
        match self {
            Self::U8 { width, .. } | Self::U16 { width, .. } => *width,
            Self::F32(rgb) => rgb.width,
        }
    }

    fn height(&self) -> usize {
        match self {
            Self::U8 { height, .. } | Self::U16 { height, .. } => *height,
            Self::F32(rgb) => rgb.height,
        }
    }

    fn value(&self, i: usize) -> f32 {
        match self {
            Self::U8 { data, .. } => f32::from(data[i]) / 255.0,
            Self::U16 { data, .. } => f32::from(data[i]) / 65535.0,
            Self::F32(rgb) => rgb.data[i],
        }
    }

    fn depth(&self) -> Depth {
        match self {
            Self::U8 { .. } => Depth::U8,
            Self::U16 { .. } => Depth::U16,
            Self::F32(_) => Depth::F32,
        }
    }

    fn crop_rgb(&self, x: usize, y: usize, w: usize, h: usize) -> RgbImage {
        /// Rows `y..y + h`, columns `x..x + w` of interleaved integer values, as floats.
        fn rows<T: Copy>(
            values: &[T],
            width: usize,
            (x, y, w, h): (usize, usize, usize, usize),
            to_f32: impl Fn(T) -> f32,
        ) -> RgbImage {
            let mut data = Vec::with_capacity(w * h * 3);
            for row in y..y + h {
                let start = (row * width + x) * 3;
                data.extend(values[start..start + w * 3].iter().map(|&v| to_f32(v)));
            }
            RgbImage {
                width: w,
                height: h,
                data,
            }
        }
        match self {
            Self::U8 { width, data, .. } => {
                rows(data, *width, (x, y, w, h), |v| f32::from(v) / 255.0)
            }
            Self::U16 { width, data, .. } => {
                rows(data, *width, (x, y, w, h), |v| f32::from(v) / 65535.0)
            }
            Self::F32(rgb) => rgb.crop(x, y, w, h),
        }
    }

    fn to_pixels(&self) -> Pixels {
        self.clone()
    }

    fn all_finite(&self) -> bool {
        self.as_rgb().is_none_or(Raster::all_finite)
    }

    fn as_u8(&self) -> Option<&[u8]> {
        match self {
            Self::U8 { data, .. } => Some(data),
            _ => None,
        }
    }
}

/// A decoded photo and what is needed to save a result the way the original was stored.
#[derive(Debug, Clone)]
pub struct Photo {
    /// The colour image with orientation applied, in the file's own bit depth (shared with
    /// the measurement that restores it, not copied).
    pub pixels: std::sync::Arc<Pixels>,
    /// Alpha in `[0, 1]` per pixel, when the file had an alpha channel.
    pub alpha: Option<Vec<f32>>,
    /// The file it came from, if any.
    pub path: Option<PathBuf>,
    /// Its format, if recognised.
    pub format: Option<ImageFormat>,
    /// The EXIF block with the orientation tag reset (the pixels are already upright).
    pub exif: Option<Vec<u8>>,
    /// The embedded colour profile.
    pub icc: Option<Vec<u8>>,
    /// Whether the file stored more than 8 bits per channel.
    pub high_bit_depth: bool,
}

impl Photo {
    /// Wraps an RGB image with no file behind it.
    pub fn from_rgb(rgb: RgbImage) -> Self {
        Self {
            pixels: std::sync::Arc::new(Pixels::F32(rgb)),
            alpha: None,
            path: None,
            format: None,
            exif: None,
            icc: None,
            high_bit_depth: false,
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.pixels.width()
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.pixels.height()
    }
}

/// Reads and decodes a photo file.
pub fn load(path: &Path) -> Result<Photo> {
    let bytes = crate::fsutil::read_bounded("photo", path, crate::limits::MAX_IMAGE_FILE_BYTES)?;
    let mut photo = decode(&bytes, path)?;
    photo.path = Some(path.to_owned());
    Ok(photo)
}

/// A decoded file before it becomes a [`Photo`]: the pixels in the file's own bit depth,
/// oriented, and the metadata.
struct Decoded {
    image: DynamicImage,
    format: Option<ImageFormat>,
    exif: Option<Vec<u8>>,
    icc: Option<Vec<u8>>,
    high_bit_depth: bool,
}

/// Decodes a photo from memory; `name` is used in error messages.
pub fn decode(bytes: &[u8], name: &Path) -> Result<Photo> {
    let Decoded {
        image,
        format,
        exif,
        icc,
        high_bit_depth,
    } = decode_image(bytes, name)?;
    let (pixels, alpha) = split_alpha(image);
    Ok(Photo {
        pixels: std::sync::Arc::new(pixels),
        alpha,
        path: None,
        format,
        exif,
        icc,
        high_bit_depth,
    })
}

/// The colour of a decoded image in its own bit depth (8, 16 or float), and its alpha.
fn split_alpha(image: DynamicImage) -> (Pixels, Option<Vec<f32>>) {
    /// Separates interleaved RGBA into RGB and alpha (as `[0, 1]`).
    fn split<T: Copy>(rgba: &[T], to_f32: impl Fn(T) -> f32) -> (Vec<T>, Vec<f32>) {
        let n = rgba.len() / 4;
        let mut rgb = Vec::with_capacity(n * 3);
        let mut alpha = Vec::with_capacity(n);
        for p in rgba.chunks_exact(4) {
            rgb.extend_from_slice(&p[..3]);
            alpha.push(to_f32(p[3]));
        }
        (rgb, alpha)
    }
    let (width, height) = (image.width() as usize, image.height() as usize);
    let colour = image.color();
    let has_alpha = colour.has_alpha();
    match colour.bytes_per_pixel() / colour.channel_count().max(1) {
        1 => {
            let (data, alpha) = if has_alpha {
                let (rgb, alpha) = split(&image.into_rgba8().into_raw(), |v| f32::from(v) / 255.0);
                (rgb, Some(alpha))
            } else {
                (image.into_rgb8().into_raw(), None)
            };
            let pixels = Pixels::U8 {
                width,
                height,
                data,
            };
            (pixels, alpha)
        }
        2 => {
            let (data, alpha) = if has_alpha {
                let to_f32 = |v| f32::from(v) / 65535.0;
                let (rgb, alpha) = split(&image.into_rgba16().into_raw(), to_f32);
                (rgb, Some(alpha))
            } else {
                (image.into_rgb16().into_raw(), None)
            };
            let pixels = Pixels::U16 {
                width,
                height,
                data,
            };
            (pixels, alpha)
        }
        _ => {
            let clamp = |v: f32| if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
            let (data, alpha) = if has_alpha {
                let (rgb, alpha) = split(&image.into_rgba32f().into_raw(), clamp);
                (rgb, Some(alpha))
            } else {
                (image.into_rgb32f().into_raw(), None)
            };
            let data = data.into_iter().map(clamp).collect();
            let rgb = RgbImage {
                width,
                height,
                data,
            };
            (Pixels::F32(rgb), alpha)
        }
    }
}

/// Checks and decodes an image file (see [`decode`]) into its own bit depth, oriented.
fn decode_image(bytes: &[u8], name: &Path) -> Result<Decoded> {
    let image_error = |source| Error::Image {
        path: name.to_owned(),
        source,
    };
    if bytes.is_empty() {
        return Err(Error::invalid(
            "image file",
            name.display(),
            "the file is empty; choose a JPEG, PNG, WebP or TIFF photo",
        ));
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| Error::Io {
            path: name.to_owned(),
            source,
        })?;
    let format = reader.format();
    let Some(format) = format else {
        return Err(Error::invalid(
            "image file",
            name.display(),
            "not a recognised image format; EPS Studio reads JPEG, PNG, WebP and TIFF",
        ));
    };
    if !matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Tiff
    ) {
        return Err(Error::invalid(
            "image file",
            name.display(),
            format!(
                "is a {} file, a format EPS Studio does not read; convert it to PNG, JPEG, WebP or TIFF",
                format
                    .extensions_str()
                    .first()
                    .map_or("?", |e| e)
                    .to_uppercase()
            ),
        ));
    }
    let format = Some(format);
    if format == Some(ImageFormat::Jpeg) {
        if jpeg_is_truncated(bytes) {
            return Err(Error::invalid(
                "image file",
                name.display(),
                "the JPEG is damaged or truncated (its image data ends early); copy the file again from its source",
            ));
        }
        if let Some(why) = jpeg_scan_error(bytes) {
            return Err(Error::invalid(
                "image file",
                name.display(),
                format!(
                    "the JPEG is damaged or truncated ({why}); its missing part would come out as a flat band. Copy the file again from its source"
                ),
            ));
        }
    }
    let damaged = |e: image::ImageError| {
        let why = match &e {
            image::ImageError::Unsupported(_) => format!(
                "uses a variant of its format EPS Studio does not read ({e}); convert it to 8- or 16-bit PNG or JPEG"
            ),
            _ => format!("the file is damaged or truncated ({e})"),
        };
        Error::invalid("image file", name.display(), why)
    };
    let mut decoder = reader.into_decoder().map_err(damaged)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Error::invalid(
            "image size",
            format!("{w}×{h}"),
            "the image has no pixels",
        ));
    }
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(Error::invalid(
            "image size",
            format!("{w}×{h}"),
            format!(
                "larger than {} megapixels; downscale or crop it first",
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    let orientation = decoder.orientation().map_err(image_error)?;
    let mut exif = decoder.exif_metadata().ok().flatten();
    if let Some(chunk) = exif.as_mut() {
        let _ = image::metadata::Orientation::remove_from_exif_chunk(chunk);
    }
    let icc = decoder.icc_profile().ok().flatten();
    let colour = decoder.color_type();
    let mut image = DynamicImage::from_decoder(decoder).map_err(damaged)?;
    image.apply_orientation(orientation);
    let high_bit_depth = colour.bytes_per_pixel() / colour.channel_count().max(1) > 1;
    Ok(Decoded {
        image,
        format,
        exif,
        icc,
        high_bit_depth,
    })
}

/// Decodes a JPEG with the strict decoder, which stops at damaged image data (a truncated scan
/// with an end marker appended, a marker inside the scan) where the lenient one fills the rest
/// with grey; returns what was wrong.
fn jpeg_scan_error(bytes: &[u8]) -> Option<String> {
    let options = zune_core::options::DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(bytes),
        options,
    );
    decoder
        .decode()
        .err()
        .map(|e| e.to_string().trim().to_owned())
}

/// Whether a JPEG lacks its end-of-image marker after the last scan: JPEG decoders fill the
/// missing part with grey instead of failing, which would silently damage the photo.
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let find_last = |marker: u8| {
        bytes
            .windows(2)
            .rposition(|w| w[0] == 0xFF && w[1] == marker)
    };
    match (find_last(0xDA), find_last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi < sos,
        (Some(_), None) => true,
        _ => false,
    }
}

/// How to encode a saved image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveFormat {
    /// PNG (16-bit when the original had more than 8 bits).
    Png,
    /// JPEG with a quality in 1–100.
    Jpeg {
        /// Encoder quality.
        quality: u8,
    },
    /// Lossless WebP.
    WebP,
    /// TIFF.
    Tiff,
}

impl SaveFormat {
    /// The format a path's extension asks for.
    pub fn from_path(path: &Path, jpeg_quality: u8) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        Ok(match ext.as_str() {
            "png" => Self::Png,
            "jpg" | "jpeg" => Self::Jpeg {
                quality: jpeg_quality,
            },
            "webp" => Self::WebP,
            "tif" | "tiff" => Self::Tiff,
            _ => {
                return Err(Error::invalid(
                    "output file name",
                    path.display(),
                    "use the extension .png, .jpg, .webp or .tif",
                ));
            }
        })
    }

    /// The usual extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg { .. } => "jpg",
            Self::WebP => "webp",
            Self::Tiff => "tif",
        }
    }

    /// The format to save a result of `photo` in "same as input" mode.
    pub fn same_as(photo: &Photo, jpeg_quality: u8) -> Self {
        match photo.format {
            Some(ImageFormat::Jpeg) => Self::Jpeg {
                quality: jpeg_quality,
            },
            Some(ImageFormat::WebP) => Self::WebP,
            Some(ImageFormat::Tiff) => Self::Tiff,
            _ => Self::Png,
        }
    }
}

/// What to save: pixels plus the metadata to carry over.
#[derive(Debug, Clone, Copy)]
pub struct SaveImage<'a> {
    /// The colour pixels.
    pub rgb: &'a dyn Raster,
    /// Alpha to keep (same size), if any.
    pub alpha: Option<&'a [f32]>,
    /// EXIF to embed (orientation already reset).
    pub exif: Option<&'a [u8]>,
    /// ICC profile to embed.
    pub icc: Option<&'a [u8]>,
    /// Write 16 bits per channel where the format allows it.
    pub high_bit_depth: bool,
}

impl<'a> SaveImage<'a> {
    /// Pixels with the metadata of `photo` (its alpha only when the sizes agree).
    pub fn like(rgb: &'a dyn Raster, photo: &'a Photo) -> Self {
        let alpha = photo
            .alpha
            .as_deref()
            .filter(|a| a.len() == rgb.width() * rgb.height());
        Self {
            rgb,
            alpha,
            exif: photo.exif.as_deref(),
            icc: photo.icc.as_deref(),
            high_bit_depth: photo.high_bit_depth,
        }
    }

    /// Bare pixels, no metadata.
    pub fn plain(rgb: &'a dyn Raster) -> Self {
        Self {
            rgb,
            alpha: None,
            exif: None,
            icc: None,
            high_bit_depth: false,
        }
    }
}

/// Encodes `image` in `format`.
pub fn encode(image: &SaveImage<'_>, format: SaveFormat) -> Result<Vec<u8>> {
    let (w, h) = (image.rgb.width() as u32, image.rgb.height() as u32);
    let wide = image.high_bit_depth && matches!(format, SaveFormat::Png | SaveFormat::Tiff);
    // JPEG has no alpha; WebP/PNG/TIFF keep it.
    let with_alpha = image.alpha.is_some() && !matches!(format, SaveFormat::Jpeg { .. });
    let channels = if with_alpha { 4 } else { 3 };
    let n = image.rgb.width() * image.rgb.height();
    // Straight to the encoder's integer samples, with no full-size float copy in between.
    let value = |i: usize, c: usize| -> f32 {
        if c < 3 {
            image.rgb.value(i * 3 + c)
        } else {
            image.alpha.map_or(1.0, |a| a[i])
        }
    };
    let (bytes, colour): (std::borrow::Cow<'_, [u8]>, image::ExtendedColorType) = if wide {
        let mut words = Vec::with_capacity(n * channels * 2);
        for i in 0..n {
            for c in 0..channels {
                let v = to_u16(value(i, c));
                words.extend_from_slice(&v.to_ne_bytes());
            }
        }
        let colour = if with_alpha {
            image::ExtendedColorType::Rgba16
        } else {
            image::ExtendedColorType::Rgb16
        };
        (words.into(), colour)
    } else if let (Some(bytes), false) = (image.rgb.as_u8(), with_alpha) {
        // Already the encoder's bytes.
        (bytes.into(), image::ExtendedColorType::Rgb8)
    } else {
        let mut bytes = Vec::with_capacity(n * channels);
        for i in 0..n {
            for c in 0..channels {
                bytes.push(to_u8(value(i, c)));
            }
        }
        let colour = if with_alpha {
            image::ExtendedColorType::Rgba8
        } else {
            image::ExtendedColorType::Rgb8
        };
        (bytes.into(), colour)
    };
    let mut out = Vec::new();
    let failed =
        |e: image::ImageError| Error::invalid("image encoding", format.extension(), e.to_string());
    match format {
        SaveFormat::Png => {
            let mut enc = image::codecs::png::PngEncoder::new(&mut out);
            add_metadata(&mut enc, image);
            enc.write_image(&bytes, w, h, colour).map_err(failed)?;
        }
        SaveFormat::Jpeg { quality } => {
            let mut enc =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
            add_metadata(&mut enc, image);
            enc.write_image(&bytes, w, h, colour).map_err(failed)?;
        }
        SaveFormat::WebP => {
            let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            add_metadata(&mut enc, image);
            enc.write_image(&bytes, w, h, colour).map_err(failed)?;
        }
        SaveFormat::Tiff => {
            let enc = image::codecs::tiff::TiffEncoder::new(Cursor::new(&mut out));
            enc.write_image(&bytes, w, h, colour).map_err(failed)?;
        }
    }
    Ok(out)
}

fn add_metadata(enc: &mut impl image::ImageEncoder, image: &SaveImage<'_>) {
    // A format that cannot hold the metadata still saves the pixels.
    if let Some(exif) = image.exif {
        let _ = enc.set_exif_metadata(exif.to_vec());
    }
    if let Some(icc) = image.icc {
        let _ = enc.set_icc_profile(icc.to_vec());
    }
}

/// Saves `image` to `path` atomically. Refuses to replace an existing file unless `overwrite`.
pub fn save(image: &SaveImage<'_>, path: &Path, format: SaveFormat, overwrite: bool) -> Result<()> {
    // Before encoding; the folder itself is checked once per run by the caller, and the write
    // creates it if needed.
    crate::fsutil::check_output_name(path, overwrite)?;
    let bytes = encode(image, format)?;
    crate::fsutil::write(path, &bytes, overwrite)
}

/// `dir/stem.ext`, or `dir/stem-2.ext`, `-3`, … — the first name not taken. An empty `ext`
/// gives `dir/stem`, `dir/stem-2`, … (for folders).
pub fn free_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let name = |suffix: String| {
        if ext.is_empty() {
            dir.join(format!("{stem}{suffix}"))
        } else {
            dir.join(format!("{stem}{suffix}.{ext}"))
        }
    };
    let first = name(String::new());
    if !crate::fsutil::is_taken(&first) {
        return first;
    }
    (2..)
        .map(|i| name(format!("-{i}")))
        .find(|p| !crate::fsutil::is_taken(p))
        .unwrap_or(first)
}

/// The stem of a photo's file name (`"photo"` when it has none).
pub fn stem_of(path: Option<&Path>) -> String {
    path.and_then(Path::file_stem)
        .map_or_else(|| "photo".to_owned(), |s| s.to_string_lossy().into_owned())
}

/// Reads an inpainting mask image: white (or any bright, opaque pixel) marks what to fill.
/// Returns `true` for pixels to fill. The mask must be exactly `width × height`.
///
/// The mask is read at 8 bits per channel (a float copy of a 24-megapixel mask would take
/// 380 MB for one bit of information per pixel), with the same rule as [`mask_from_photo`].
pub fn load_mask(path: &Path, width: usize, height: usize) -> Result<Vec<bool>> {
    let bytes = crate::fsutil::read_bounded("mask", path, crate::limits::MAX_IMAGE_FILE_BYTES)?;
    let decoded = decode_image(&bytes, path)?;
    let (w, h) = (
        decoded.image.width() as usize,
        decoded.image.height() as usize,
    );
    if w != width || h != height {
        return Err(Error::invalid(
            "mask size",
            format!("{w}×{h}"),
            format!("the photo is {width}×{height}; the mask must have the same size"),
        ));
    }
    let has_alpha = decoded.image.color().has_alpha();
    let rgba = decoded.image.into_rgba8();
    Ok(rgba
        .pixels()
        .map(|p| {
            let [r, g, b, a] = p.0;
            let luma = 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
            (!has_alpha || a >= 128) && luma >= 127.5
        })
        .collect())
}

/// Bright, opaque pixels of an image as a fill mask.
pub fn mask_from_photo(photo: &Photo) -> Vec<bool> {
    let n = photo.width() * photo.height();
    (0..n)
        .map(|i| {
            let p = |c: usize| photo.pixels.value(i * 3 + c);
            let luma = 0.299 * p(0) + 0.587 * p(1) + 0.114 * p(2);
            let opaque = photo.alpha.as_ref().is_none_or(|a| a[i] >= 0.5);
            opaque && luma >= 0.5
        })
        .collect()
}

/// Encodes a fill mask as a grayscale PNG (white = fill), the format [`load_mask`] reads.
pub fn mask_png(mask: &[bool], width: usize, height: usize) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = mask.iter().map(|&m| if m { 255 } else { 0 }).collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            &bytes,
            width as u32,
            height as u32,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| Error::invalid("mask encoding", "png", e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_path_skips_taken_names() -> Result<()> {
        let dir = tempfile_dir("free");
        std::fs::write(dir.join("a.png"), b"x").map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        assert_eq!(free_path(&dir, "a", "png"), dir.join("a-2.png"));
        assert_eq!(free_path(&dir, "b", "png"), dir.join("b.png"));
        std::fs::create_dir_all(dir.join("c.samples")).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        assert_eq!(free_path(&dir, "c.samples", ""), dir.join("c.samples-2"));
        Ok(())
    }

    /// A raw little-endian TIFF/EXIF block holding only Orientation = `value`.
    fn exif_orientation(value: u8) -> Vec<u8> {
        let mut e = vec![0x49, 0x49, 42, 0, 8, 0, 0, 0, 1, 0];
        e.extend([0x12, 0x01, 3, 0, 1, 0, 0, 0, value, 0, 0, 0]);
        e.extend([0, 0, 0, 0]);
        e
    }

    #[test]
    fn exif_orientation_is_applied_once_and_kept_on_save() -> Result<()> {
        // 4 wide, 2 high; the left half dark, the right half bright.
        let data: Vec<f32> = (0..8)
            .flat_map(|i| {
                let v = if i % 4 < 2 { 0.1 } else { 0.9 };
                [v, v, v]
            })
            .collect();
        let rgb = RgbImage::from_data(4, 2, data)?;
        let exif = exif_orientation(6); // rotate 90° clockwise to display
        let image = SaveImage {
            rgb: &rgb,
            alpha: None,
            exif: Some(&exif),
            icc: None,
            high_bit_depth: false,
        };
        let jpeg = encode(&image, SaveFormat::Jpeg { quality: 100 })?;
        let photo = decode(&jpeg, Path::new("rotated.jpg"))?;
        assert_eq!(
            (photo.width(), photo.height()),
            (2, 4),
            "orientation applied"
        );
        // After a clockwise turn the bright right half is at the bottom.
        let rgb = photo.pixels.to_rgb();
        assert!(rgb.pixel(0, 0)[0] < 0.5 && rgb.pixel(0, 3)[0] > 0.5);
        let kept = photo.exif.clone().unwrap_or_default();
        assert_eq!(
            image::metadata::Orientation::from_exif_chunk(&kept),
            Some(image::metadata::Orientation::NoTransforms),
            "the saved EXIF must not rotate the upright pixels again"
        );
        let again = encode(&SaveImage::like(&*photo.pixels, &photo), SaveFormat::Png)?;
        let back = decode(&again, Path::new("saved.png"))?;
        assert_eq!((back.width(), back.height()), (2, 4));
        assert!(back.exif.is_some(), "EXIF is carried into the saved file");
        Ok(())
    }

    #[test]
    fn alpha_and_sixteen_bits_survive_a_png_round_trip() -> Result<()> {
        let rgb = RgbImage::from_data(2, 1, vec![0.25, 0.5, 0.75, 1.0, 0.0, 0.123_45])?;
        let alpha = [0.5, 1.0];
        let image = SaveImage {
            rgb: &rgb,
            alpha: Some(&alpha),
            exif: None,
            icc: None,
            high_bit_depth: true,
        };
        let png = encode(&image, SaveFormat::Png)?;
        let back = decode(&png, Path::new("a.png"))?;
        assert!(back.high_bit_depth);
        let a = back.alpha.clone().unwrap_or_default();
        assert!((a[0] - 0.5).abs() < 1e-4 && (a[1] - 1.0).abs() < 1e-6);
        assert!(
            (back.pixels.value(5) - 0.123_45).abs() < 1e-4,
            "16-bit precision kept"
        );
        Ok(())
    }

    /// Photos stay in their file's bit depth, read back the values a float decode gives, and
    /// an 8-bit image saves to the same file whether it is held as bytes or as floats.
    #[test]
    fn photos_keep_their_bit_depth_and_their_values() -> Result<()> {
        let (w, h) = (5_usize, 3_usize);
        let data: Vec<f32> = (0..w * h * 3)
            .map(|i| (i * 17 % 256) as f32 / 255.0)
            .collect();
        let rgb = RgbImage::from_data(w, h, data)?;
        let png8 = encode(&SaveImage::plain(&rgb), SaveFormat::Png)?;
        let photo = decode(&png8, Path::new("a.png"))?;
        assert_eq!(photo.pixels.depth(), Depth::U8);
        assert_eq!(photo.pixels.bytes(), w * h * 3);
        let back = photo.pixels.to_rgb();
        assert!(back.data.iter().zip(&rgb.data).all(|(a, b)| a == b));
        // Crops agree with the float image's own crop.
        assert_eq!(photo.pixels.crop_rgb(1, 1, 3, 2), rgb.crop(1, 1, 3, 2));
        // The byte fast path writes what the float path writes.
        assert_eq!(
            encode(&SaveImage::plain(&*photo.pixels), SaveFormat::Png)?,
            png8
        );
        let wide = SaveImage {
            high_bit_depth: true,
            ..SaveImage::plain(&rgb)
        };
        let photo16 = decode(&encode(&wide, SaveFormat::Png)?, Path::new("b.png"))?;
        assert_eq!(photo16.pixels.depth(), Depth::U16);
        assert!(
            photo16
                .pixels
                .to_rgb()
                .data
                .iter()
                .zip(&rgb.data)
                .all(|(a, b)| (a - b).abs() < 1e-6)
        );
        // Writing a value rounds it to the storage and clamps it.
        let mut p = Pixels::quantised(rgb, Depth::U8);
        p.set(0, 0.5);
        p.set(1, 7.0);
        assert_eq!((p.value(0), p.value(1)), (128.0 / 255.0, 1.0));
        Ok(())
    }

    /// Masks are read at 8 bits with the same rule as [`mask_from_photo`]: bright and opaque
    /// pixels fill; 16-bit and transparent masks agree with the photo path.
    #[test]
    fn masks_read_at_8_bits_agree_with_the_photo_rule() -> Result<()> {
        let dir = tempfile_dir("mask");
        let (w, h) = (7, 5);
        let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
            let v = (x * 40) as u8;
            image::Rgba([v, v, v, if y == 2 { 0 } else { 255 }])
        });
        let path = dir.join("m.png");
        rgba.save(&path).map_err(|source| Error::Image {
            path: path.clone(),
            source,
        })?;
        let fast = load_mask(&path, w as usize, h as usize)?;
        let slow = mask_from_photo(&load(&path)?);
        assert_eq!(fast, slow);
        assert!(fast.iter().any(|&f| f) && !fast.iter().all(|&f| f));
        assert!(!fast[2 * w as usize + 6], "transparent pixels never fill");
        let wide = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(w, h, |x, _| {
            image::Luma([(x * 11000) as u16])
        });
        let path16 = dir.join("m16.png");
        wide.save(&path16).map_err(|source| Error::Image {
            path: path16.clone(),
            source,
        })?;
        assert_eq!(
            load_mask(&path16, w as usize, h as usize)?,
            mask_from_photo(&load(&path16)?)
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn truncated_and_empty_files_are_refused() {
        let rgb = RgbImage::new(64, 64);
        let jpeg = encode(&SaveImage::plain(&rgb), SaveFormat::Jpeg { quality: 90 })
            .unwrap_or_else(|e| panic!("{e}"));
        let cut = &jpeg[..jpeg.len() * 2 / 3];
        let err = decode(cut, Path::new("cut.jpg"))
            .map(|_| ())
            .expect_err("a truncated JPEG must be refused")
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        assert!(decode(&[], Path::new("empty.png")).is_err());
        assert!(decode(b"not an image at all", Path::new("x.png")).is_err());
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("eps-photo-{tag}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        dir
    }
}
