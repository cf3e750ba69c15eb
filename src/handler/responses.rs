//! OpenAI's Responses API: CreateResponse, GetResponse, DeleteResponse.
//!
//! CreateResponse is checked inline ([`Plan::check`]: anything not
//! implemented is a 400 naming it), then runs as a model-lane job: it
//! rebuilds the conversation from `previous_response_id`'s chain in the
//! store (instructions first — they are never inherited — then every earlier
//! turn, then this request's input), loads the model (so an unknown model or
//! response is a plain 404 before any stream opens), streams a
//! `ResponseStarted` and the chat's `ChatChunk`s when asked, stores the
//! finished response (durably, through the store's writer) unless `store`
//! is false, and answers with `ResponseResult`. A failed generation stores
//! nothing; a cancelled one is stored as `cancelled` with its partial text.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::responses_input::Plan;
use super::{Handler, Outcome};
use crate::api::{
    ChatComplete, ChatMessage, CreateResponseRequest, FinishReason, IncompleteDetails,
    InputTokensDetails, ItemKind, ItemStatus, JobId, OutputContent, OutputItem,
    OutputTokensDetails, Response, ResponseDeleted, ResponseObject, ResponseRef, ResponseReply,
    ResponseStatus, ResponseUsage, item_id,
};
use crate::error::ApiError;
use crate::jobs::Job;

/// The most responses one `previous_response_id` chain may hold.
const MAX_CHAIN: u32 = 1000;

impl Handler {
    pub(super) fn create_response(&self, request: CreateResponseRequest) -> Outcome {
        let plan = match Plan::check(request) {
            Ok(plan) => plan,
            Err(error) => return Outcome::Reply(Response::error(error)),
        };
        let created_at = unix_seconds();
        let (slot, runner) = (Arc::clone(&self.store), self.chat_runner());
        Outcome::Job(Job::new(
            self.chat_lane(plan.model.as_deref()),
            move |ctx| {
                let store = if plan.store || plan.previous.is_some() {
                    Some(slot.get()?)
                } else {
                    None
                };
                let mut messages: Vec<ChatMessage> = plan
                    .instructions
                    .iter()
                    .map(|text| ChatMessage::new("system", text.clone()))
                    .collect();
                if let (Some(previous), Some(store)) = (&plan.previous, &store) {
                    if !is_response_id(previous) {
                        return Err(ApiError::not_found(format!(
                            "previous_response_id {previous:?}: no stored response has that id"
                        )));
                    }
                    messages.extend(store.response_chain(previous, MAX_CHAIN)?.messages);
                }
                messages.extend(plan.input.iter().cloned());
                let model = runner.model_id(plan.model.as_deref())?;
                let mut object = started(&plan, new_response_id(), model, created_at);
                if plan.stream {
                    ctx.emit(Response::ResponseStarted(Box::new(ResponseReply {
                        response: object.clone(),
                    })));
                }
                let complete = runner.run_chat(
                    ctx,
                    Some(&object.model),
                    &messages,
                    &plan.sampling,
                    &plan.structure,
                    plan.stream,
                )?;
                let turn = finish(&mut object, &complete);
                if let (true, Some(store)) = (plan.store, &store) {
                    store.save_response(&object, &plan.input, &[turn])?;
                }
                Ok(Response::ResponseResult(Box::new(ResponseReply {
                    response: object,
                })))
            },
        ))
    }

    pub(super) fn get_response(&self, request: ResponseRef) -> Outcome {
        if let Err(error) = check_ref(&request) {
            return Outcome::Reply(Response::error(error));
        }
        self.store_job(move |store| {
            let response = store.response(&request.response_id)?;
            Ok(Response::ResponseResult(Box::new(ResponseReply {
                response,
            })))
        })
    }

    pub(super) fn delete_response(&self, request: ResponseRef) -> Outcome {
        if let Err(error) = check_ref(&request) {
            return Outcome::Reply(Response::error(error));
        }
        self.store_job(move |store| {
            store.delete_response(&request.response_id)?;
            Ok(Response::ResponseDeleted(ResponseDeleted {
                response_id: request.response_id,
                deleted: true,
            }))
        })
    }
}

fn check_ref(request: &ResponseRef) -> Result<(), ApiError> {
    let unknown: Vec<&str> = request.unsupported.keys().map(String::as_str).collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "not supported here: {}",
            unknown.join(", ")
        )));
    }
    if !is_response_id(&request.response_id) {
        return Err(ApiError::not_found(format!(
            "no stored response has the id {:?}",
            request.response_id
        )));
    }
    Ok(())
}

/// `resp_` and 32 hex digits: ids of other shapes were never made here.
fn is_response_id(id: &str) -> bool {
    id.strip_prefix("resp_")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh id: 128 unguessable bits.
fn new_response_id() -> String {
    format!("resp_{}{}", JobId::random(), JobId::random())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Response object before any output, echoing the request.
fn started(plan: &Plan, id: String, model: String, created_at: u64) -> ResponseObject {
    ResponseObject {
        id,
        object: "response".into(),
        created_at,
        status: ResponseStatus::InProgress,
        completed_at: None,
        error: None,
        incomplete_details: None,
        instructions: plan.instructions.clone(),
        max_output_tokens: plan.sampling.max_tokens,
        metadata: plan.echo.metadata.clone(),
        model,
        output: Vec::new(),
        parallel_tool_calls: plan.echo.parallel_tool_calls,
        previous_response_id: plan.previous.clone(),
        store: plan.store,
        temperature: plan.sampling.temperature,
        top_p: plan.sampling.top_p,
        text: plan.echo.text.clone(),
        tool_choice: plan.echo.tool_choice.clone(),
        tools: plan.echo.tools.clone(),
        truncation: "disabled".into(),
        usage: None,
        user: plan.echo.user.clone(),
        background: false,
    }
}

/// Fills in the output, status and usage; returns the assistant's turn as
/// the next response in the chain will replay it.
fn finish(object: &mut ResponseObject, complete: &ChatComplete) -> ChatMessage {
    let (status, item_status) = match complete.finish_reason {
        FinishReason::Stop | FinishReason::ToolCalls => {
            (ResponseStatus::Completed, ItemStatus::Completed)
        }
        FinishReason::Length => (ResponseStatus::Incomplete, ItemStatus::Incomplete),
        FinishReason::Cancelled => (ResponseStatus::Cancelled, ItemStatus::Incomplete),
    };
    object.status = status;
    object.completed_at = (status == ResponseStatus::Completed).then(unix_seconds);
    object.incomplete_details = (status == ResponseStatus::Incomplete).then(|| IncompleteDetails {
        reason: "max_output_tokens".into(),
    });
    let reasoning = complete.reasoning.clone().filter(|r| !r.is_empty());
    if let Some(text) = &reasoning {
        object.output.push(OutputItem::Reasoning {
            id: item_id(&object.id, ItemKind::Reasoning),
            summary: Vec::new(),
            content: vec![OutputContent::ReasoningText { text: text.clone() }],
            status: item_status,
        });
    }
    if !complete.text.is_empty() || complete.tool_calls.is_empty() {
        object.output.push(OutputItem::Message {
            id: item_id(&object.id, ItemKind::Message),
            role: "assistant".into(),
            status: item_status,
            content: vec![OutputContent::output_text(complete.text.clone())],
        });
    }
    for (index, call) in complete.tool_calls.iter().enumerate() {
        object.output.push(OutputItem::FunctionCall {
            id: item_id(&object.id, ItemKind::FunctionCall(index as u32)),
            call_id: call.id.clone(),
            name: call.function.name.clone(),
            arguments: call.function.arguments.clone(),
            status: item_status,
        });
    }
    let usage = complete.usage;
    object.usage = Some(ResponseUsage {
        input_tokens: usage.prompt_tokens,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.cached_tokens,
            cache_write_tokens: 0,
        },
        output_tokens: usage.completion_tokens,
        output_tokens_details: OutputTokensDetails::default(),
        total_tokens: usage.total_tokens,
    });
    let mut turn = ChatMessage::new("assistant", complete.text.clone());
    turn.tool_calls = complete.tool_calls.clone();
    turn.reasoning_content = reasoning;
    turn
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FunctionCall, ToolCall, Usage};

    fn complete(text: &str, finish_reason: FinishReason, calls: usize) -> ChatComplete {
        ChatComplete {
            model: "m".into(),
            text: text.into(),
            reasoning: None,
            tool_calls: (0..calls)
                .map(|i| ToolCall {
                    id: format!("call_{i}"),
                    kind: "function".into(),
                    function: FunctionCall {
                        name: "f".into(),
                        arguments: "{}".into(),
                    },
                })
                .collect(),
            logprobs: Vec::new(),
            trimmed_messages: 0,
            choices: Vec::new(),
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: 2,
                total_tokens: 7,
                cached_tokens: 1,
            },
            finish_reason,
            session_id: None,
            upstream: None,
            fallback_from: None,
            citations: Vec::new(),
        }
    }

    /// The text of a Response's message items (what the SDK's `output_text` reads).
    fn output_text(object: &ResponseObject) -> String {
        object
            .output
            .iter()
            .filter_map(|item| match item {
                OutputItem::Message { content, .. } => Some(content),
                _ => None,
            })
            .flatten()
            .map(OutputContent::text)
            .collect()
    }

    fn object() -> ResponseObject {
        let request: CreateResponseRequest =
            serde_json::from_value(serde_json::json!({"input": "hi"})).unwrap();
        let plan = Plan::check(request).unwrap();
        started(&plan, new_response_id(), "m".into(), 1)
    }

    #[test]
    fn a_cut_reply_is_incomplete_and_tool_calls_are_items() {
        let mut cut = object();
        finish(&mut cut, &complete("abc", FinishReason::Length, 0));
        assert_eq!(cut.status, ResponseStatus::Incomplete);
        assert_eq!(
            cut.incomplete_details.as_ref().unwrap().reason,
            "max_output_tokens"
        );
        assert_eq!(output_text(&cut), "abc");
        assert_eq!(cut.usage.unwrap().input_tokens_details.cached_tokens, 1);

        let mut calls = object();
        let turn = finish(&mut calls, &complete("", FinishReason::ToolCalls, 2));
        assert_eq!(calls.status, ResponseStatus::Completed);
        assert_eq!(calls.output.len(), 2, "no empty message beside tool calls");
        let OutputItem::FunctionCall { id, call_id, .. } = &calls.output[1] else {
            panic!()
        };
        assert_eq!(
            (id.as_str(), call_id.as_str()),
            (
                item_id(&calls.id, ItemKind::FunctionCall(1)).as_str(),
                "call_1"
            )
        );
        assert_eq!(turn.tool_calls.len(), 2);
        assert!(is_response_id(&calls.id));
        let json: serde_json::Value = serde_json::to_value(&calls).unwrap();
        assert_eq!(json["output"][0]["type"], "function_call");
        assert_eq!(
            serde_json::from_value::<ResponseObject>(json).unwrap(),
            calls
        );
    }
}
