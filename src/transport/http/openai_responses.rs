//! OpenAI's Responses API on the wire: `POST /v1/responses` and
//! `GET`/`DELETE /v1/responses/{id}`.
//!
//! The request body is CreateResponse's own fields (the protocol keeps
//! OpenAI's shape), so nothing is translated on the way in. A final reply is
//! the Response object itself ([`render`]). A stream is rendered by a
//! [`ResponsesStream`], one per request: OpenAI's events are finer than the
//! protocol's replies (an item is announced, filled and closed; every event
//! has a `sequence_number`), so the renderer keeps the items it opened and
//! the text they hold. The events, in OpenAI's order: `response.created`,
//! `response.in_progress`; per item `response.output_item.added`, for text
//! items `response.content_part.added`, the deltas, `...text.done` and
//! `response.content_part.done`, for function calls
//! `response.function_call_arguments.delta`/`.done`; then
//! `response.output_item.done`; last `response.completed` (or
//! `response.incomplete` when cut by `max_output_tokens`, as OpenAI sends it),
//! or `response.failed` / `error` when the generation fails.

use serde_json::{Value, json};

use super::reply::Answer;
use super::routes::Shape;
use crate::api::{
    ChatChunk, ItemKind, ItemStatus, OutputContent, OutputItem, Reply, Response, ResponseError,
    ResponseObject, ResponseStatus, ToolCallDelta, item_id,
};

/// A final reply as OpenAI shapes it, for the Responses routes.
pub fn render(shape: Shape, reply: &Reply) -> Option<Answer> {
    if shape != Shape::OpenAiResponses {
        return None;
    }
    let body = match &reply.response {
        Response::ResponseResult(result) => serde_json::to_value(&result.response).ok()?,
        Response::ResponseDeleted(deleted) => {
            json!({"id": deleted.response_id, "object": "response", "deleted": deleted.deleted})
        }
        _ => return None,
    };
    Some(Answer::json(body.to_string().into_bytes()))
}

/// The state of one streamed response.
#[derive(Debug, Default)]
pub struct ResponsesStream {
    sequence: u64,
    /// The Response object as it started (its id names every item).
    started: Option<ResponseObject>,
    /// The items announced so far, in output order.
    items: Vec<Opened>,
    /// The final object's items, once it came: what closing an item shows.
    finals: Vec<OutputItem>,
    out: Vec<u8>,
}

#[derive(Debug)]
struct Opened {
    item: OutputItem,
    done: bool,
}

impl ResponsesStream {
    /// The SSE events for one reply of the job.
    pub fn event(&mut self, reply: &Reply) -> Vec<u8> {
        match &reply.response {
            Response::ResponseStarted(started) => {
                let response = &started.response;
                self.started = Some(response.clone());
                self.push("response.created", json!({"response": response}));
                self.push("response.in_progress", json!({"response": response}));
            }
            Response::ChatChunk(chunk) => self.chunk(chunk),
            Response::ResponseResult(result) => {
                let response = &result.response;
                self.finals = response.output.clone();
                for item in &response.output {
                    // Announced now if the stream never showed it.
                    let index = self.open(item_key(item), || emptied(item));
                    self.close(index);
                }
                let kind = match response.status {
                    ResponseStatus::Completed => "response.completed",
                    ResponseStatus::Failed => "response.failed",
                    _ => "response.incomplete",
                };
                self.push(kind, json!({"response": response}));
            }
            Response::Error { error } => match self.started.take() {
                Some(mut response) => {
                    response.status = ResponseStatus::Failed;
                    response.error = Some(ResponseError {
                        code: "server_error".into(),
                        message: error.detail.clone(),
                    });
                    response.output = self.items.iter().map(|o| o.item.clone()).collect();
                    self.push("response.failed", json!({"response": response}));
                }
                None => {
                    let code = error.kind.rsplit(':').next().unwrap_or("error");
                    self.push(
                        "error",
                        json!({"code": code, "message": error.detail, "param": null}),
                    );
                }
            },
            // Nothing else belongs to this route's jobs.
            _ => {}
        }
        std::mem::take(&mut self.out)
    }

    fn chunk(&mut self, chunk: &ChatChunk) {
        if !chunk.reasoning.is_empty() {
            self.text_delta(ItemKind::Reasoning, &chunk.reasoning);
        }
        if !chunk.delta.is_empty() {
            self.text_delta(ItemKind::Message, &chunk.delta);
        }
        for call in &chunk.tool_calls {
            self.call_delta(call);
        }
    }

    fn id(&self, kind: ItemKind) -> String {
        let response = self.started.as_ref().map_or("", |r| r.id.as_str());
        item_id(response, kind)
    }

    /// The output index of item `id`, opening it (and closing the item
    /// before it, as OpenAI streams items one after another) if it is new.
    fn open(&mut self, id: &str, fresh: impl FnOnce() -> OutputItem) -> usize {
        if let Some(index) = self.items.iter().position(|o| item_key(&o.item) == id) {
            return index;
        }
        if let Some(last) = self.items.len().checked_sub(1) {
            self.close(last);
        }
        let item = fresh();
        let index = self.items.len();
        self.push(
            "response.output_item.added",
            json!({"output_index": index, "item": announced(&item)}),
        );
        if let Some(part) = empty_part(&item) {
            self.push(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            );
        }
        self.items.push(Opened { item, done: false });
        index
    }

    fn text_delta(&mut self, kind: ItemKind, delta: &str) {
        let id = self.id(kind);
        let index = self.open(&id, || fresh_item(kind, &id));
        self.append(index, delta);
    }

    fn call_delta(&mut self, call: &ToolCallDelta) {
        let id = self.id(ItemKind::FunctionCall(call.index));
        let index = self.open(&id, || OutputItem::FunctionCall {
            id: id.clone(),
            call_id: call.id.clone().unwrap_or_default(),
            name: call.name.clone().unwrap_or_default(),
            arguments: String::new(),
            status: ItemStatus::InProgress,
        });
        self.append(index, &call.arguments);
    }

    /// Adds text or arguments to item `index`, with its delta event.
    fn append(&mut self, index: usize, delta: &str) {
        if delta.is_empty() {
            return;
        }
        let opened = &mut self.items[index];
        let id = item_key(&opened.item).to_string();
        let event = match &mut opened.item {
            OutputItem::FunctionCall { arguments, .. } => {
                arguments.push_str(delta);
                "response.function_call_arguments.delta"
            }
            OutputItem::Message { content, .. } => {
                push_text(content, delta);
                "response.output_text.delta"
            }
            OutputItem::Reasoning { content, .. } => {
                push_text(content, delta);
                "response.reasoning_text.delta"
            }
        };
        let mut body = json!({"item_id": id, "output_index": index, "delta": delta});
        if !matches!(opened.item, OutputItem::FunctionCall { .. }) {
            body["content_index"] = json!(0);
        }
        if event == "response.output_text.delta" {
            body["logprobs"] = json!([]);
        }
        self.push(event, body);
    }

    /// Closes item `index`: the rest of its final text (what the stream
    /// did not carry), then its `...done` events with its final form (its
    /// streamed form, completed, when no final object came yet).
    fn close(&mut self, index: usize) {
        if self.items[index].done {
            return;
        }
        let id = item_key(&self.items[index].item).to_string();
        let item = match self.finals.iter().find(|f| item_key(f) == id) {
            Some(item) => item.clone(),
            None => with_status(self.items[index].item.clone(), ItemStatus::Completed),
        };
        let streamed = item_text(&self.items[index].item).to_string();
        if let Some(rest) = item_text(&item).strip_prefix(streamed.as_str()) {
            self.append(index, rest);
        }
        let at = json!({"item_id": id, "output_index": index});
        match &item {
            OutputItem::FunctionCall { arguments, .. } => {
                let mut body = at.clone();
                body["arguments"] = json!(arguments);
                self.push("response.function_call_arguments.done", body);
            }
            OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. } => {
                let reasoning = matches!(item, OutputItem::Reasoning { .. });
                let text = content.first().map_or("", OutputContent::text);
                let mut body = at.clone();
                body["content_index"] = json!(0);
                body["text"] = json!(text);
                let event = if reasoning {
                    "response.reasoning_text.done"
                } else {
                    body["logprobs"] = json!([]);
                    "response.output_text.done"
                };
                self.push(event, body);
                let mut part = at.clone();
                part["content_index"] = json!(0);
                part["part"] = json!(content.first());
                self.push("response.content_part.done", part);
            }
        }
        self.push(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        self.items[index] = Opened { item, done: true };
    }

    /// Appends one `event:`/`data:` pair with the next sequence number.
    fn push(&mut self, kind: &str, mut body: Value) {
        body["type"] = json!(kind);
        body["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        self.out
            .extend_from_slice(format!("event: {kind}\ndata: {body}\n\n").as_bytes());
    }
}

fn item_key(item: &OutputItem) -> &str {
    match item {
        OutputItem::Message { id, .. }
        | OutputItem::FunctionCall { id, .. }
        | OutputItem::Reasoning { id, .. } => id,
    }
}

fn item_text(item: &OutputItem) -> &str {
    match item {
        OutputItem::FunctionCall { arguments, .. } => arguments,
        OutputItem::Message { content, .. } | OutputItem::Reasoning { content, .. } => {
            content.first().map_or("", OutputContent::text)
        }
    }
}

fn push_text(content: &mut [OutputContent], delta: &str) {
    if let Some(OutputContent::OutputText { text, .. } | OutputContent::ReasoningText { text }) =
        content.first_mut()
    {
        text.push_str(delta);
    }
}

/// A text item with nothing in it yet.
fn fresh_item(kind: ItemKind, id: &str) -> OutputItem {
    match kind {
        ItemKind::Reasoning => OutputItem::Reasoning {
            id: id.to_string(),
            summary: Vec::new(),
            content: vec![OutputContent::ReasoningText {
                text: String::new(),
            }],
            status: ItemStatus::InProgress,
        },
        _ => OutputItem::Message {
            id: id.to_string(),
            role: "assistant".into(),
            status: ItemStatus::InProgress,
            content: vec![OutputContent::output_text("")],
        },
    }
}

/// A final item as it is first announced: in progress, with no text.
fn emptied(item: &OutputItem) -> OutputItem {
    match item {
        OutputItem::FunctionCall {
            id, call_id, name, ..
        } => OutputItem::FunctionCall {
            id: id.clone(),
            call_id: call_id.clone(),
            name: name.clone(),
            arguments: String::new(),
            status: ItemStatus::InProgress,
        },
        OutputItem::Message { id, .. } => fresh_item(ItemKind::Message, id),
        OutputItem::Reasoning { id, .. } => fresh_item(ItemKind::Reasoning, id),
    }
}

/// The item as `output_item.added` shows it: text items with no parts yet
/// (`content_part.added` follows).
fn announced(item: &OutputItem) -> Value {
    let mut value = json!(item);
    if value.get("content").is_some() {
        value["content"] = json!([]);
    }
    value
}

fn empty_part(item: &OutputItem) -> Option<Value> {
    match item {
        OutputItem::FunctionCall { .. } => None,
        OutputItem::Message { .. } => Some(json!(OutputContent::output_text(""))),
        OutputItem::Reasoning { .. } => Some(json!(OutputContent::ReasoningText {
            text: String::new()
        })),
    }
}

fn with_status(mut item: OutputItem, new: ItemStatus) -> OutputItem {
    match &mut item {
        OutputItem::Message { status, .. }
        | OutputItem::FunctionCall { status, .. }
        | OutputItem::Reasoning { status, .. } => *status = new,
    }
    item
}

#[cfg(test)]
mod tests;
