//! Stage 1, the model of record: the ONNX protobuf binding, loading (with its guards against
//! hostile files), tensors and dtypes, the graph view, shape inference, graph editing, the
//! operator-schema check, opset upgrades and atomic writing. Imports nothing but `error` and
//! `job`.

pub mod dtype;
pub mod graph;
pub(crate) mod graph_edit;
pub mod guard;
pub mod load;
pub mod opset;
pub mod proto;
pub mod schema;
pub mod shapes;
pub mod synthetic;
pub mod tensor;
pub mod write;
