//! Stored OpenAI Responses API responses: the SQL behind CreateResponse's
//! `store` and `previous_response_id`, GetResponse and DeleteResponse.
//!
//! A row keeps the request's own turns (`input`, without its instructions,
//! which OpenAI does not carry over) and the assistant's turn (`output`) as
//! the chat messages they became, so a conversation is rebuilt by walking
//! `previous_id` links and concatenating — no re-reading of OpenAI item
//! shapes. The whole Response object is kept beside them for GetResponse.
//! Writes go through the writer thread like every other change: a response
//! is acknowledged only once its commit is durable.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Store, StoreError};
use crate::api::{ChatMessage, ResponseObject};

/// A conversation rebuilt from a chain of responses.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// Every turn of every response in the chain, oldest first.
    pub messages: Vec<ChatMessage>,
    /// How many responses it came from.
    pub responses: usize,
}

impl Store {
    /// Stores a response with the turns it added; returns once durable.
    pub fn save_response(
        &self,
        object: &ResponseObject,
        input: &[ChatMessage],
        output: &[ChatMessage],
    ) -> Result<(), StoreError> {
        let row = (
            object.id.clone(),
            object.previous_response_id.clone(),
            object.model.clone(),
            object.created_at as i64,
            to_json(input)?,
            to_json(output)?,
            to_json(object)?,
        );
        self.write(move |tx, _| {
            tx.prepare_cached(
                "INSERT INTO responses (id, previous_id, model, created_at, input, output, object)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![row.0, row.1, row.2, row.3, row.4, row.5, row.6])?;
            Ok(())
        })
    }

    /// The stored Response object `id`.
    pub fn response(&self, id: &str) -> Result<ResponseObject, StoreError> {
        let object: Option<String> = self.read(|c| {
            Ok(
                c.prepare_cached("SELECT object FROM responses WHERE id = ?1")?
                    .query_row([id], |row| row.get(0))
                    .optional()?,
            )
        })?;
        let object = object.ok_or_else(|| not_found(id))?;
        from_json(&object)
    }

    /// The conversation that ends with response `id`: its chain's turns,
    /// oldest first, at most `max_depth` responses deep (deeper is an
    /// error, not a silent cut). A link to a deleted response ends the chain.
    pub fn response_chain(&self, id: &str, max_depth: u32) -> Result<Conversation, StoreError> {
        let rows = self.read(|c| chain_rows(c, id, max_depth))?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!(
                "previous_response_id {id:?}: no stored response has that id"
            )));
        }
        if rows.len() > max_depth as usize {
            return Err(StoreError::Invalid(format!(
                "previous_response_id {id:?} continues a conversation more than {max_depth} \
                 responses deep; start a new one"
            )));
        }
        let mut messages = Vec::new();
        for (input, output) in &rows {
            messages.extend(from_json::<Vec<ChatMessage>>(input)?);
            messages.extend(from_json::<Vec<ChatMessage>>(output)?);
        }
        Ok(Conversation {
            messages,
            responses: rows.len(),
        })
    }

    /// Deletes response `id` (later responses that continue it keep their own turns).
    pub fn delete_response(&self, id: &str) -> Result<(), StoreError> {
        let key = id.to_string();
        self.write(move |tx, _| {
            let deleted = tx
                .prepare_cached("DELETE FROM responses WHERE id = ?1")?
                .execute([&key])?;
            if deleted == 0 {
                return Err(not_found(&key));
            }
            Ok(())
        })
    }
}

/// (input, output) of the chain's rows, oldest first; `max_depth + 1` rows
/// at most, so a chain too deep shows.
fn chain_rows(
    connection: &Connection,
    id: &str,
    max_depth: u32,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut statement = connection.prepare_cached(
        "WITH RECURSIVE chain(id, previous_id, input, output, depth) AS (
             SELECT id, previous_id, input, output, 0 FROM responses WHERE id = ?1
             UNION ALL
             SELECT r.id, r.previous_id, r.input, r.output, chain.depth + 1
             FROM responses r JOIN chain ON r.id = chain.previous_id
             WHERE chain.depth < ?2
         )
         SELECT input, output FROM chain ORDER BY depth DESC",
    )?;
    let rows = statement
        .query_map(params![id, max_depth], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("no stored response has the id {id:?}"))
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Sqlite(format!("cannot encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Sqlite(format!("a stored response does not read back: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;
    use crate::store::testing::TempDir;

    fn object(id: &str, previous: Option<&str>) -> ResponseObject {
        serde_json::from_value(serde_json::json!({
            "id": id, "object": "response", "created_at": 1, "status": "completed",
            "completed_at": 2, "error": null, "incomplete_details": null, "instructions": null,
            "max_output_tokens": null, "metadata": {}, "model": "m", "output": [],
            "parallel_tool_calls": true, "previous_response_id": previous, "store": true,
            "temperature": null, "top_p": null, "text": {"format": {"type": "text"}},
            "tool_choice": "auto", "tools": [], "truncation": "disabled", "usage": null,
            "user": null, "background": false,
        }))
        .unwrap()
    }

    fn turn(role: &str, text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::new(role, text)]
    }

    #[test]
    fn chains_rebuild_oldest_first_and_stay_bounded() {
        let dir = TempDir::new("responses");
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store
            .save_response(
                &object("a", None),
                &turn("user", "1"),
                &turn("assistant", "2"),
            )
            .unwrap();
        store
            .save_response(
                &object("b", Some("a")),
                &turn("user", "3"),
                &turn("assistant", "4"),
            )
            .unwrap();
        let chain = store.response_chain("b", 10).unwrap();
        let texts: Vec<&str> = chain.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!((texts, chain.responses), (vec!["1", "2", "3", "4"], 2));
        assert_eq!(store.response("b").unwrap(), object("b", Some("a")));
        assert!(matches!(
            store.response_chain("b", 1),
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.response_chain("zz", 10),
            Err(StoreError::NotFound(_))
        ));

        store.delete_response("a").unwrap();
        assert!(matches!(store.response("a"), Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.delete_response("a"),
            Err(StoreError::NotFound(_))
        ));
        // A deleted link ends the chain; the later response keeps its turns.
        assert_eq!(store.response_chain("b", 10).unwrap().messages.len(), 2);
    }
}
