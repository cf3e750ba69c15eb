//! Getting models onto the disk and off it: PullModel (streams
//! `PullProgress` chunks, then `PullComplete`), DeleteModel, and the catalog
//! requests GetRegisteredModels and GetRecipes.
//!
//! Pulls run on the I/O lane: a download of minutes must not hold the model
//! lane's thread, which chat and embeddings need.

use std::sync::Arc;

use super::{Handler, Outcome};
use crate::api::{
    DeleteModelRequest, ModelFormat, ModelRef, PullModelRequest, Recipes, RecipesRequest,
    RegisteredModels, Response, ServerEvent,
};
use crate::engine::manager::UnloadReason;
use crate::error::ApiError;
use crate::jobs::{Job, Lane};

impl Handler {
    pub(super) fn pull_model(&self, request: PullModelRequest) -> Outcome {
        // Bad URLs and names answer at once, before a job is queued.
        if let Err(error) = crate::pull::target(&self.models_dir, &request) {
            return Outcome::Reply(Response::error(error));
        }
        let dir = self.models_dir.clone();
        let policy = self.pull_policy.clone();
        let models = Arc::clone(&self.models);
        let events = Arc::clone(&self.events);
        Outcome::Job(Job::new(Lane::Io, move |ctx| {
            let cancel = ctx.cancel_flag();
            let complete = crate::pull::pull(&dir, &request, &policy, &cancel, &mut |progress| {
                // Subscribers (the extension's other views) see every pull.
                events.publish(&ServerEvent::PullProgress(progress.clone()));
                ctx.emit(Response::PullProgress(progress))
            })?;
            // A loaded model of that id is now stale: the next request loads
            // the new file (requests running on the old one finish on it).
            models.unload(&complete.model, UnloadReason::Replaced);
            Ok(Response::PullComplete(complete))
        }))
    }

    pub(super) fn delete_model(&self, request: DeleteModelRequest) -> Outcome {
        let models = Arc::clone(&self.models);
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let file = models.find(&request.model)?;
            if models.is_loaded(&file.id) {
                if !request.force {
                    return Err(ApiError::conflict(format!(
                        "{} is loaded: unload it first, or delete with force",
                        file.id
                    )));
                }
                models.unload(&file.id, UnloadReason::Requested);
            }
            let removed = match file.format {
                ModelFormat::Gguf => std::fs::remove_file(&file.path),
                ModelFormat::Onnx => std::fs::remove_dir_all(&file.path),
                ModelFormat::Upstream => return Err(crate::upstream::not_local(&file.id)),
            };
            removed.map_err(|e| {
                ApiError::internal(format!("cannot delete {}: {e}", file.path.display()))
            })?;
            log::info!("deleted model {} ({})", file.id, file.path.display());
            Ok(Response::ModelDeleted(ModelRef { model: file.id }))
        }))
    }

    pub(super) fn registered_models(&self) -> Outcome {
        let dir = self.models_dir.clone();
        Outcome::Job(Job::new(Lane::Io, move |_| {
            Ok(Response::RegisteredModels(RegisteredModels {
                models: crate::catalog::registered_models(&dir),
            }))
        }))
    }

    pub(super) fn recipes(&self, request: RecipesRequest) -> Outcome {
        Outcome::Reply(Response::Recipes(Recipes {
            recipes: crate::catalog::recipes(request.task),
        }))
    }
}
