//! A session's stored conversation replayed to a model: every tool call answered, partial
//! answers kept.

use crate::conversation::{ChatMessage, Role};
use crate::store::Message;

/// Stored messages as the provider needs them: every tool call answered (a call whose
/// result was lost to a crash gets an explicit "interrupted" result), partial answers kept.
pub(super) fn provider_history(stored: Vec<Message>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(stored.len());
    let mut unanswered: Vec<String> = Vec::new();
    for message in stored {
        if message.role != Role::Tool {
            close_unanswered(&mut out, &mut unanswered);
        }
        match message.role {
            Role::Assistant if message.content.is_empty() && message.tool_calls.is_empty() => {}
            Role::Tool => {
                let Some(id) = message.tool_call_id else {
                    continue;
                };
                let Some(pos) = unanswered.iter().position(|u| *u == id) else {
                    continue;
                };
                unanswered.remove(pos);
                out.push(ChatMessage::tool_result(message.content, id, message.tool_error));
            }
            role => {
                unanswered = message.tool_calls.iter().map(|c| c.id.clone()).collect();
                out.push(ChatMessage::with_calls(role, message.content, message.tool_calls, None));
            }
        }
    }
    close_unanswered(&mut out, &mut unanswered);
    out
}

fn close_unanswered(out: &mut Vec<ChatMessage>, unanswered: &mut Vec<String>) {
    for id in unanswered.drain(..) {
        let interrupted = "error: interrupted before this tool call finished";
        out.push(ChatMessage::tool_result(interrupted, id, true));
    }
}
