//! The protocol: one set of value types shared by every transport.
//!
//! A request is a JSON object `{"id": <string|number>, "request_type": "<Variant>",
//! ...fields}`; a reply is `{"id", "response_type", ...fields, "done"}`. Native
//! messaging and WebRTC carry these envelopes as they are; HTTP builds the same
//! values from its routes. The per-area field types live in the submodules.

pub mod chat;
pub mod events;
pub mod history;
mod ids;
pub mod knowledge;
pub mod models;
pub mod responses;
pub mod retrieval;
pub mod rtc;
pub mod system;
pub mod tools;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

pub use chat::*;
pub use events::*;
pub use history::*;
pub use ids::{JobId, RequestId};
pub use knowledge::*;
pub use models::*;
pub use responses::*;
pub use retrieval::*;
pub use rtc::*;
pub use system::*;
pub use tools::*;

/// Every request type the product serves, tagged by `request_type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "request_type")]
#[allow(missing_docs)] // each variant is the request of the same name in openapi.yaml
pub enum Request {
    // chat & generation
    Chat(ChatRequest),
    Generate(GenerateRequest),
    Responses(ResponsesRequest),
    // OpenAI's Responses API
    CreateResponse(CreateResponseRequest),
    GetResponse(ResponseRef),
    DeleteResponse(ResponseRef),
    StopGeneration(TargetRequest),
    GetHaltStatus(TargetRequest),
    Tokenize(TokenizeRequest),
    Detokenize(DetokenizeRequest),
    // models
    ListModels(Empty),
    LoadModel(LoadModelRequest),
    UnloadModel(ModelRef),
    ModelInfo(ModelRef),
    PullModel(PullModelRequest),
    DeleteModel(DeleteModelRequest),
    // embeddings & retrieval
    Embeddings(EmbeddingsRequest),
    Rerank(RerankRequest),
    RagQuery(RagQueryRequest),
    AddDocument(AddDocumentRequest),
    DeleteDocument(DeleteDocumentRequest),
    ListCollections(Empty),
    ClearCollection(CollectionRef),
    // the knowledge base: uploads in parts, indexed in the background
    UploadStart(UploadStartRequest),
    UploadChunk(UploadChunkRequest),
    UploadFinish(UploadRef),
    UploadCancel(UploadRef),
    ListDocuments(CollectionRef),
    // export, backup and restore
    ExportSession(ExportSessionRequest),
    Backup(Empty),
    Restore(UploadRef),
    // history
    ChatHistory(ChatHistoryRequest),
    SaveMessage(SaveMessageRequest),
    ListSessions(ListSessionsRequest),
    DeleteSession(SessionRef),
    SearchHistory(SearchHistoryRequest),
    TruncateSession(TruncateSessionRequest),
    SetSessionSettings(SessionSettings),
    // system
    Health(Empty),
    SystemInfo(Empty),
    GetStats(Empty),
    GetResources(Empty),
    EstimateMemory(ModelSizingRequest),
    CheckCompatibility(ModelSizingRequest),
    GetRecipes(RecipesRequest),
    GetRegisteredModels(Empty),
    ListLoadedModels(Empty),
    SelectModel(SelectModelRequest),
    // parameters
    GetParams(Empty),
    SetParams(ParamsPatch),
    // the API key, answered over native messaging only (transport::native_port)
    GetApiKey(Empty),
    // WebRTC signaling
    CreateWebRtcOffer(CreateOfferRequest),
    SubmitWebRtcAnswer(SubmitAnswerRequest),
    AddIceCandidate(IceCandidateRequest),
    GetWebRtcSession(RtcSessionRef),
    ListWebRtcSessions(Empty),
    CloseWebRtcSession(RtcSessionRef),
    // server push
    Subscribe(SubscribeRequest),
}

impl Request {
    /// The `request_type` name, for logs and statistics.
    pub fn name(&self) -> &'static str {
        macro_rules! names {
            ($($variant:ident),* $(,)?) => {
                match self { $(Request::$variant(_) => stringify!($variant),)* }
            };
        }
        names!(
            Chat,
            Generate,
            Responses,
            CreateResponse,
            GetResponse,
            DeleteResponse,
            StopGeneration,
            GetHaltStatus,
            Tokenize,
            Detokenize,
            ListModels,
            LoadModel,
            UnloadModel,
            ModelInfo,
            PullModel,
            DeleteModel,
            Embeddings,
            Rerank,
            RagQuery,
            AddDocument,
            DeleteDocument,
            ListCollections,
            ClearCollection,
            UploadStart,
            UploadChunk,
            UploadFinish,
            UploadCancel,
            ListDocuments,
            ExportSession,
            Backup,
            Restore,
            ChatHistory,
            SaveMessage,
            ListSessions,
            DeleteSession,
            SearchHistory,
            TruncateSession,
            SetSessionSettings,
            Health,
            SystemInfo,
            GetStats,
            GetResources,
            EstimateMemory,
            CheckCompatibility,
            GetRecipes,
            GetRegisteredModels,
            ListLoadedModels,
            SelectModel,
            GetParams,
            SetParams,
            GetApiKey,
            CreateWebRtcOffer,
            SubmitWebRtcAnswer,
            AddIceCandidate,
            GetWebRtcSession,
            ListWebRtcSessions,
            CloseWebRtcSession,
            Subscribe,
        )
    }

    /// Whether this request only reads state (polling): it never counts as
    /// activity for a model's keep-alive timer.
    pub fn is_polling(&self) -> bool {
        matches!(
            self,
            Request::Health(_)
                | Request::SystemInfo(_)
                | Request::GetStats(_)
                | Request::GetResources(_)
                | Request::GetHaltStatus(_)
                | Request::ListLoadedModels(_)
                | Request::GetWebRtcSession(_)
                | Request::ListWebRtcSessions(_)
        )
    }
}

/// A request with no fields (unknown fields are ignored everywhere, so that a
/// newer client still talks to an older host).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Empty {}

/// Parses one message into its id and request.
///
/// The id is read first, so that a message with a valid id but a bad body gets
/// an error carrying that id; a message that is not a JSON object gets `null`.
// The error is the cold path of every request and is answered at once; a
// box would cost an allocation for nothing.
#[allow(clippy::result_large_err)]
pub fn parse_request(bytes: &[u8]) -> Result<(RequestId, Request), (RequestId, ApiError)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        let detail = if std::str::from_utf8(bytes).is_err() {
            "the message is not valid UTF-8".to_string()
        } else {
            format!("the message is not valid JSON: {e}")
        };
        (RequestId::NONE, ApiError::bad_request(detail))
    })?;
    request_from_value(value)
}

/// Reads the id and request out of a JSON value (see [`parse_request`]).
#[allow(clippy::result_large_err)] // as parse_request
pub fn request_from_value(value: Value) -> Result<(RequestId, Request), (RequestId, ApiError)> {
    let Value::Object(mut object) = value else {
        return Err((
            RequestId::NONE,
            ApiError::bad_request(format!(
                "a message must be a JSON object, not {}",
                json_kind(&value)
            )),
        ));
    };
    let id = RequestId::from_value(object.remove("id").unwrap_or(Value::Null))
        .map_err(|e| (RequestId::NONE, e))?;
    match object.get("request_type") {
        Some(Value::String(_)) => {}
        Some(_) => return Err((id, ApiError::bad_request("`request_type` must be a string"))),
        None => {
            return Err((
                id,
                ApiError::bad_request("the message has no `request_type`"),
            ));
        }
    }
    integral_floats_as_integers(&mut object);
    match serde_json::from_value::<Request>(Value::Object(object)) {
        Ok(request) => Ok((id, request)),
        Err(e) => Err((
            id,
            ApiError::bad_request(describe_serde_error(&e.to_string())),
        )),
    }
}

/// JSON has one kind of number, and `2.0` is the integer 2 (JSON Schema and
/// openapi.yaml's `type: integer` agree), but serde refuses a float for an
/// integer field. So integral floats among a request's fields, and in their
/// lists (`tokens`), become integers; `metadata` is the client's, kept as sent.
fn integral_floats_as_integers(object: &mut serde_json::Map<String, Value>) {
    for (_, value) in object.iter_mut().filter(|(key, _)| *key != "metadata") {
        match value {
            Value::Array(items) => items.iter_mut().for_each(float_as_integer),
            value => float_as_integer(value),
        }
    }
}

fn float_as_integer(value: &mut Value) {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    let Some(float) = value
        .as_f64()
        .filter(|f| value.is_f64() && f.fract() == 0.0)
    else {
        return;
    };
    // In range, `as` is exact here: the value is a whole number.
    if (-TWO_POW_63..TWO_POW_63).contains(&float) {
        *value = Value::from(float as i64);
    } else if (0.0..2.0 * TWO_POW_63).contains(&float) {
        *value = Value::from(float as u64);
    }
}

/// Turns serde's message into one a client developer can act on.
fn describe_serde_error(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let name = rest.split(',').next().unwrap_or(rest);
        return format!("unknown request_type {name}");
    }
    format!("invalid request: {message}")
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Every reply, tagged by `response_type`. Chunks have `done: false`; every
/// other reply is final.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "response_type")]
#[allow(missing_docs)] // each variant is the reply of the same name in openapi.yaml
pub enum Response {
    Error { error: ApiError },
    // chat & generation
    ChatChunk(ChatChunk),
    ChatComplete(ChatComplete),
    HaltStatus(HaltStatus),
    Stopped(HaltStatus),
    Tokens(Tokens),
    Text(DetokenizedText),
    // OpenAI's Responses API: Started is streamed first, then Result
    ResponseStarted(Box<ResponseReply>),
    ResponseResult(Box<ResponseReply>),
    ResponseDeleted(ResponseDeleted),
    // models
    ModelList(ModelList),
    ModelDetails(Box<ModelDetails>),
    ModelLoaded(LoadedModel),
    ModelUnloaded(ModelRef),
    ModelDeleted(ModelRef),
    PullProgress(PullProgress),
    PullComplete(PullComplete),
    LoadedModels(LoadedModels),
    ModelSelected(Selection),
    MemoryEstimate(MemoryEstimate),
    Compatibility(Compatibility),
    Recipes(Recipes),
    RegisteredModels(RegisteredModels),
    // embeddings & retrieval
    EmbeddingList(EmbeddingList),
    RerankResults(RerankResults),
    RagResults(RagResults),
    DocumentAdded(DocumentAdded),
    DocumentDeleted(DocumentRef),
    Collections(CollectionList),
    CollectionCleared(CollectionCleared),
    // the knowledge base
    UploadStarted(UploadStarted),
    UploadChunkStored(UploadChunkStored),
    UploadCancelled(UploadRef),
    IndexingStarted(IndexingStarted),
    Documents(DocumentList),
    // export, backup and restore: FileParts, then FileComplete
    FilePart(FilePart),
    FileComplete(FileComplete),
    Restored(Restored),
    // history
    History(History),
    MessageSaved(SavedMessage),
    Sessions(SessionList),
    SessionDeleted(SessionRef),
    HistoryResults(HistoryResults),
    SessionTruncated(SessionTruncated),
    SessionSettings(SessionSettings),
    // system
    Health(Health),
    SystemInfo(Box<SystemInfo>),
    Stats(Stats),
    Resources(Resources),
    Params(GenerationParams),
    ApiKey(ApiKeyReply),
    // WebRTC signaling
    WebRtcSession(RtcSession),
    WebRtcSignal(RtcSignal),
    WebRtcSessions(RtcSessionList),
    WebRtcSessionClosed(RtcSessionRef),
    // server push: a subscription's replies, never final
    Subscribed(Subscription),
    Event(ServerEvent),
}

impl Response {
    /// Whether this reply ends its request (`"done": true`).
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            Response::ChatChunk(_)
                | Response::ResponseStarted(_)
                | Response::PullProgress(_)
                | Response::FilePart(_)
                | Response::Subscribed(_)
                | Response::Event(_)
        )
    }

    /// The reply for a failed request.
    pub fn error(error: ApiError) -> Response {
        Response::Error { error }
    }
}

/// One reply addressed to the request it answers.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The id of the request this answers.
    pub id: RequestId,
    /// The server's id of the job answering, on a job's first reply only.
    pub job_id: Option<JobId>,
    /// What the handler said.
    pub response: Response,
}

impl Reply {
    /// A reply that names no job (inline answers, signaling, push).
    pub fn new(id: RequestId, response: Response) -> Reply {
        Reply {
            id,
            job_id: None,
            response,
        }
    }

    /// The reply as the JSON envelope native messaging and WebRTC carry.
    pub fn to_json(&self) -> Vec<u8> {
        let envelope = Envelope {
            id: &self.id,
            job_id: self.job_id,
            response: &self.response,
            done: self.response.is_final(),
        };
        // Serializing our own types cannot fail: they hold no maps with
        // non-string keys and no failing Serialize impls.
        serde_json::to_vec(&envelope).expect("reply serializes")
    }
}

/// The wire form of a [`Reply`]: `id`, the response's fields, `done`.
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a RequestId,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<JobId>,
    #[serde(flatten)]
    response: &'a Response,
    done: bool,
}

#[cfg(test)]
mod tests;
