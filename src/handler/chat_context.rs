//! The context policy of a chat: a conversation whose prompt leaves less
//! than its reply's room in the model's context loses messages from its
//! middle, never silently and never its ends.
//!
//! The leading system messages and the latest turn stay; whole turns go,
//! oldest first. A turn runs from a user message up to the next one, so an
//! assistant message's `tool_calls` always leave together with their `tool`
//! results, and what is left still opens with a user message (templates that
//! insist on alternating roles accept it). The reply's room is its
//! `max_tokens`, at most half the context. With `truncate: false` nothing is
//! dropped: the request is a 400 that says by how many tokens it is over.

use crate::api::ChatMessage;
use crate::error::ApiError;

/// The conversation as it goes to the model, and how many messages left it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The messages kept.
    pub messages: Vec<ChatMessage>,
    /// Messages dropped from the middle.
    pub dropped: u32,
}

/// Fits `messages` with `reply_tokens` of room for the reply (at most half
/// the context). `count` gives a message list's prompt tokens and the
/// context size.
pub fn fit_conversation(
    messages: &[ChatMessage],
    reply_tokens: u32,
    truncate: bool,
    mut count: impl FnMut(&[ChatMessage]) -> Result<(u32, u32), ApiError>,
) -> Result<Fitted, ApiError> {
    let head = messages.iter().take_while(|m| m.role == "system").count();
    let build = |cut: usize| -> Vec<ChatMessage> {
        messages[..head]
            .iter()
            .chain(&messages[head + cut..])
            .cloned()
            .collect()
    };
    // The prompt's tokens, the reply's room and the context, for a cut.
    let mut measure = |cut: usize| -> Result<(u32, u32, u32), ApiError> {
        let (prompt, context) = count(&build(cut))?;
        Ok((prompt, reply_tokens.min(context / 2), context))
    };
    let (prompt, reply, context) = measure(0)?;
    let whole = Fitted {
        messages: messages.to_vec(),
        dropped: 0,
    };
    // The prompt alone fits: it may run, and stops at the context's end.
    let fits_alone = prompt < context;
    if prompt.saturating_add(reply) <= context || (!truncate && fits_alone) {
        return Ok(whole);
    }
    if !truncate {
        return Err(ApiError::bad_request(format!(
            "the conversation is {prompt} tokens: {} tokens more than the model's {context}-token \
             context holds; drop messages, or leave truncate on to drop the oldest turns",
            prompt + 1 - context
        )));
    }
    // Where a turn starts: a user message after the first of the body, so
    // that at least the latest turn stays.
    let body = &messages[head..];
    let cuts: Vec<usize> = (1..body.len())
        .filter(|&i| body[i].role == "user")
        .collect();
    let shortest = match cuts.last() {
        Some(&last) => Some((last, measure(last)?)),
        None => None,
    };
    match shortest {
        Some((_, (p, r, c))) if p.saturating_add(r) <= c => {}
        // No trim leaves the reply its room: the whole conversation when it
        // fits at all, else the shortest when that does, else a 400.
        _ if fits_alone => return Ok(whole),
        Some((last, (p, _, c))) if p < c => {
            return Ok(Fitted {
                messages: build(last),
                dropped: last as u32,
            });
        }
        Some((_, (p, r, c))) => return Err(too_long(p, r, c)),
        None => return Err(too_long(prompt, reply, context)),
    }
    // Dropping more turns only shrinks the prompt: binary search the fewest.
    let (mut low, mut enough) = (0, cuts.len() - 1);
    while low < enough {
        let middle = low + (enough - low) / 2;
        let (p, r, c) = measure(cuts[middle])?;
        if p.saturating_add(r) <= c {
            enough = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(Fitted {
        messages: build(cuts[enough]),
        dropped: cuts[enough] as u32,
    })
}

fn too_long(prompt: u32, reply: u32, context: u32) -> ApiError {
    ApiError::bad_request(format!(
        "the system messages and the latest turn alone are {prompt} tokens (and the reply may \
         take {reply}): {} tokens more than the model's {context}-token context holds",
        (prompt + 1).saturating_sub(context).max(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FunctionCall, ToolCall};

    fn message(role: &str, text: &str) -> ChatMessage {
        ChatMessage::new(role, text.to_string())
    }

    /// Ten tokens a message, a context of 100.
    fn count(messages: &[ChatMessage]) -> Result<(u32, u32), ApiError> {
        Ok((messages.len() as u32 * 10, 100))
    }

    fn conversation(turns: usize) -> Vec<ChatMessage> {
        let mut all = vec![message("system", "be brief")];
        for i in 0..turns {
            all.push(message("user", &format!("question {i}")));
            all.push(message("assistant", &format!("answer {i}")));
        }
        all.push(message("user", "the latest question"));
        all
    }

    #[test]
    fn the_middle_goes_in_whole_turns_and_both_ends_stay() {
        let all = conversation(10); // 22 messages, 220 tokens
        let fitted = fit_conversation(&all, 30, true, count).unwrap();
        // 100 - 30 = 70 tokens: the system message and the newest 6 messages.
        assert_eq!(fitted.messages.len(), 6, "{:?}", fitted.messages);
        assert_eq!(fitted.dropped, 16);
        assert_eq!(fitted.messages[0].role, "system");
        assert_eq!(fitted.messages[1].role, "user");
        assert_eq!(
            fitted.messages.last().unwrap().content,
            "the latest question"
        );
        let small = conversation(1);
        let kept = fit_conversation(&small, 30, true, count).unwrap();
        assert_eq!((kept.messages, kept.dropped), (small, 0));
    }

    #[test]
    fn tool_calls_leave_with_their_results() {
        let mut all = vec![message("user", "look it up")];
        let mut call = message("assistant", "");
        call.tool_calls = vec![ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall {
                name: "search".into(),
                arguments: "{}".into(),
            },
        }];
        all.push(call);
        all.push(message("tool", "result one"));
        all.push(message("tool", "result two"));
        all.push(message("assistant", "found it"));
        all.push(message("user", "thanks, and now?"));
        // 60 tokens of 100, 50 for the reply: the first turn (5 messages) goes whole.
        let fitted = fit_conversation(&all, 50, true, count).unwrap();
        assert_eq!(fitted.dropped, 5);
        assert!(fitted.messages.iter().all(|m| m.role != "tool"));
    }

    #[test]
    fn without_truncate_or_room_it_is_a_400_saying_by_how_much() {
        let all = conversation(10);
        let error = fit_conversation(&all, 30, false, count).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.detail.contains("121 tokens more"), "{}", error.detail);
        // A prompt that fits but leaves the reply less room is left alone.
        let fits = fit_conversation(&conversation(3), 60, false, count).unwrap();
        assert_eq!(fits.dropped, 0);
        let huge = |m: &[ChatMessage]| Ok((m.len() as u32 * 1000, 100));
        let error = fit_conversation(&all, 10, true, huge).unwrap_err();
        assert_eq!(error.status, 400);
        assert!(error.detail.contains("latest turn"), "{}", error.detail);
    }
}
