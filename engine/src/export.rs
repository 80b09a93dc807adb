//! Stage 5, the file that ships: building the exported model in each format (fp32, fp16,
//! weights-int8, qdq-int8) and verifying a written file in every runtime against the preview.

pub mod build;
pub mod ort_format;
pub mod verify;
