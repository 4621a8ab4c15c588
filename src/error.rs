//! The library's error type. Every variant names what was wrong and, where it helps, what to do.

/// Errors from the restoration engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two tensors (or a tensor and an operator) disagree on shape.
    #[error("shape mismatch in {context}: expected {expected}, got {actual}")]
    ShapeMismatch {
        /// Where the mismatch was found.
        context: String,
        /// What the operation needed.
        expected: String,
        /// What it was given.
        actual: String,
    },

    /// A parameter is outside its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter's name, as the user sees it.
        name: &'static str,
        /// The rejected value, formatted.
        value: String,
        /// Why it was rejected and what would be accepted.
        reason: String,
    },

    /// A NaN or infinity appeared where finite numbers are required.
    #[error("{what} contains NaN or infinite values; check the input image and parameters")]
    NonFinite {
        /// Which quantity was not finite.
        what: String,
    },

    /// A blur kernel does not fit the image.
    #[error(
        "blur kernel {kernel_w}×{kernel_h} (width×height) is larger than the image {image_w}×{image_h}; use a smaller blur or a larger image"
    )]
    KernelTooLarge {
        /// Kernel height in pixels.
        kernel_h: usize,
        /// Kernel width in pixels.
        kernel_w: usize,
        /// Image height in pixels.
        image_h: usize,
        /// Image width in pixels.
        image_w: usize,
    },

    /// The operation is not available for this operator.
    #[error("{0}")]
    Unsupported(String),

    /// The run was cancelled by the caller between two steps.
    #[error("cancelled")]
    Cancelled,

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// An image file could not be decoded.
    #[error("cannot read image {path}: {source}")]
    Image {
        /// The file involved.
        path: std::path::PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },

    /// The GPU failed (no adapter, out of memory, a lost device, a shader error). Runs fall back to
    /// the CPU on this error.
    #[error("GPU compute failed: {0}")]
    Gpu(String),

    /// An error from the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Builds an [`Error::InvalidParameter`].
    pub fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::ShapeMismatch`].
    pub fn shape(
        context: impl Into<String>,
        expected: impl std::fmt::Display,
        actual: impl std::fmt::Display,
    ) -> Self {
        Self::ShapeMismatch {
            context: context.into(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }
}
