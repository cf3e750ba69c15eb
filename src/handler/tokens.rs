//! Tokenize and Detokenize: a chat model's vocabulary, with the model loaded
//! on first use; once it is loaded they run on the I/O lane, never behind a
//! generation.

use super::{Handler, Outcome};
use crate::api::{
    DetokenizeRequest, DetokenizedText, ModelKind, Response, TokenizeRequest, Tokens,
};
use crate::engine::text::TextModel;
use crate::error::ApiError;
use crate::jobs::{Job, Lane};

impl Handler {
    pub(super) fn tokenize(&self, request: TokenizeRequest) -> Outcome {
        self.token_job(request.model.clone(), move |text| {
            Ok(Response::Tokens(Tokens {
                tokens: text.tokenize(&request.content, request.add_special)?,
            }))
        })
    }

    pub(super) fn detokenize(&self, request: DetokenizeRequest) -> Outcome {
        self.token_job(request.model.clone(), move |text| {
            Ok(Response::Text(DetokenizedText {
                content: text.detokenize(&request.tokens)?,
            }))
        })
    }

    /// Tokens need only the vocabulary: with the model loaded this runs on
    /// the I/O lane, not behind a generation on the model lane.
    fn token_job(
        &self,
        model: Option<String>,
        work: impl FnOnce(&dyn TextModel) -> Result<Response, ApiError> + Send + 'static,
    ) -> Outcome {
        let runner = self.chat_runner();
        let loaded = self
            .models
            .resolve(ModelKind::Chat, model.as_deref())
            .map(|file| self.models.is_loaded(&file.id))
            .unwrap_or(false);
        let lane = if loaded { Lane::Io } else { Lane::Model };
        Outcome::Job(Job::new(lane, move |_| {
            let resident = runner.model(model.as_deref())?;
            let text = resident.text()?;
            work(text.as_ref())
        }))
    }
}
