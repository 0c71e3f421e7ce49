//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`), served on the same
//! port as REST: the axum router hands HTTP/2 gRPC calls to these handlers. Thin, like the REST
//! adapter: messages decode into the core's [`tensor::InferRequest`] and the answer encodes back.
//!
//! Tensor data arrives either typed (`contents`) or raw (`raw_input_contents`, one little-endian
//! buffer per input, which is what tritonclient sends); the answer mirrors the request's
//! choice, so tritonclient gets `raw_output_contents` and typed clients get `fp64_contents`.

use tonic::{Request, Response, Status};

use crate::ServeState;
use crate::inference::InferError;
use crate::tensor::{self, InputTensor};

/// Code generated from `proto/inference.proto` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::model_infer_request::InferInputTensor;
use proto::*;

/// The gRPC service over the serving state.
pub struct Grpc {
    state: ServeState,
}

/// The gRPC routes, to merge into the HTTP router.
pub fn router(state: ServeState) -> axum::Router {
    let limit = state.max_request_bytes();
    let service = GrpcInferenceServiceServer::new(Grpc { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    tonic::service::Routes::new(service).into_axum_router()
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Typed contents of one input as f64, read from the field its datatype uses.
fn typed(t: &InferInputTensor) -> Result<Vec<f64>, InferError> {
    let c = t.contents.clone().unwrap_or_default();
    Ok(match t.datatype.as_str() {
        "BOOL" => c
            .bool_contents
            .iter()
            .map(|b| f64::from(u8::from(*b)))
            .collect(),
        "INT8" | "INT16" | "INT32" => c.int_contents.iter().map(|x| f64::from(*x)).collect(),
        "INT64" => c.int64_contents.iter().map(|x| *x as f64).collect(),
        "UINT8" | "UINT16" | "UINT32" => c.uint_contents.iter().map(|x| f64::from(*x)).collect(),
        "UINT64" => c.uint64_contents.iter().map(|x| *x as f64).collect(),
        "FP32" => c.fp32_contents.iter().map(|x| f64::from(*x)).collect(),
        "FP64" => c.fp64_contents,
        other => {
            tensor::check_header(&t.name, other, &t.shape)?;
            return Err(tensor::bad(format!(
                "input {:?}: datatype {other} has no typed contents; send it in raw_input_contents",
                t.name
            )));
        }
    })
}

fn decode(req: ModelInferRequest) -> Result<(tensor::InferRequest, bool), InferError> {
    let raw = !req.raw_input_contents.is_empty();
    if raw && req.raw_input_contents.len() != req.inputs.len() {
        return Err(tensor::bad(format!(
            "{} inputs but {} raw_input_contents entries; send one per input, in order",
            req.inputs.len(),
            req.raw_input_contents.len()
        )));
    }
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for (i, t) in req.inputs.iter().enumerate() {
        let data = if raw {
            if t.contents.is_some() {
                return Err(tensor::bad(format!(
                    "input {:?} sets contents while the request uses raw_input_contents",
                    t.name
                )));
            }
            tensor::decode_raw(&t.name, &t.datatype, &t.shape, &req.raw_input_contents[i])?
        } else {
            typed(t)?
        };
        inputs.push(InputTensor {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
            data,
        });
    }
    Ok((
        tensor::InferRequest {
            model: req.model_name,
            version: some(req.model_version),
            id: some(req.id),
            inputs,
            outputs: req.outputs.into_iter().map(|o| o.name).collect(),
        },
        raw,
    ))
}

#[tonic::async_trait]
impl GrpcInferenceService for Grpc {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        let ready = self.state.check_ready().await.is_ok();
        Ok(Response::new(ServerReadyResponse { ready }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let version = some(r.version);
        let ready = match tensor::resolve(&self.state, &r.name, version.as_deref()).await {
            Ok(_) => true,
            Err(InferError::NotFound(m)) => return Err(Status::not_found(m)),
            Err(_) => false,
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: "kiln".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: crate::oip::EXTENSIONS.map(String::from).to_vec(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let version = some(r.version);
        let m = tensor::model_metadata(&self.state, &r.name, version.as_deref())?;
        let meta = |t: tensor::TensorMeta| model_metadata_response::TensorMetadata {
            name: t.name,
            datatype: t.datatype.into(),
            shape: t.shape,
        };
        Ok(Response::new(ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: m.inputs.into_iter().map(meta).collect(),
            outputs: m.outputs.into_iter().map(meta).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let headers = req.metadata().clone().into_headers();
        let (req, raw) = decode(req.into_inner())?;
        let resp =
            tensor::infer(&self.state, req, crate::metrics::Protocol::Grpc, &headers).await?;
        let [n, k] = resp.shape;
        let mut output = model_infer_response::InferOutputTensor {
            name: tensor::OUTPUT.into(),
            datatype: "FP64".into(),
            shape: vec![n as i64, k as i64],
            ..Default::default()
        };
        let mut raw_output_contents = Vec::new();
        if raw {
            raw_output_contents.push(resp.data.iter().flat_map(|x| x.to_le_bytes()).collect());
        } else {
            output.contents = Some(InferTensorContents {
                fp64_contents: resp.data,
                ..Default::default()
            });
        }
        // An answer from the fallback chain says so, as the REST response does.
        let parameters = resp
            .fallback
            .into_iter()
            .flat_map(|f| {
                [
                    ("kiln_fallback", f.source),
                    ("kiln_fallback_reason", f.reason),
                ]
            })
            .map(|(k, v)| {
                (
                    k.to_string(),
                    InferParameter {
                        parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(v)),
                    },
                )
            })
            .collect();
        Ok(Response::new(ModelInferResponse {
            model_name: resp.model_name,
            model_version: resp.model_version,
            id: resp.id.unwrap_or_default(),
            parameters,
            outputs: vec![output],
            raw_output_contents,
        }))
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let ready_only = req.into_inner().ready;
        let snapshot = self.state.snapshot();
        let models = self
            .state
            .models()
            .index(&snapshot.models)
            .into_iter()
            .filter(|e| !ready_only || e.state == "READY")
            .map(|e| repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let name = req.into_inner().model_name;
        let snapshot = self.state.snapshot();
        self.state
            .models()
            .load_model(&snapshot.models, &name)
            .await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let name = req.into_inner().model_name;
        let snapshot = self.state.snapshot();
        self.state.models().unload_model(&snapshot.models, &name)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}
