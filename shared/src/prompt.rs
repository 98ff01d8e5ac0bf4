//! Prompt templates: `{{field}}` is the item's field (a string as it is, any
//! other value as JSON), `{{item}}` the whole item as JSON. A template is
//! parsed once, at agent start; a field an item lacks fails that item.

use serde_json::Value;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `{{item}}`.
    Item,
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` at byte {0} is never closed with `}}}}`")]
    Unclosed(usize),
    #[error("`{{{{}}}}` at byte {0} names no field")]
    Empty(usize),
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let name = after[..close].trim();
            pieces.push(match name {
                "" => return Err(TemplateError::Empty(offset + open)),
                "item" => Piece::Item,
                field => Piece::Field(field.to_owned()),
            });
            let used = open + 2 + close + 2;
            offset += used;
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Self { pieces })
    }

    /// The prompt for `item`; `Err(field)` names the first field it lacks.
    pub fn render(&self, item: &Value) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Item => out.push_str(&item.to_string()),
                Piece::Field(name) => match item.get(name) {
                    Some(Value::String(text)) => out.push_str(text),
                    Some(other) => out.push_str(&other.to_string()),
                    None => return Err(name.clone()),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_and_the_item_are_filled_in() {
        let template = Template::parse("Basket for {{ text }} ({{n}}, {{tags}}): {{item}}.")
            .expect("valid template");
        let item = json!({"id": 1, "text": "fish \"soup\"", "n": 3, "tags": ["a"]});
        assert_eq!(
            template.render(&item).expect("every field there"),
            format!("Basket for fish \"soup\" (3, [\"a\"]): {item}.")
        );
    }

    #[test]
    fn a_missing_field_is_named() {
        let template = Template::parse("{{text}} and {{other}}").expect("valid");
        assert_eq!(
            template.render(&json!({"text": "x"})),
            Err("other".to_owned())
        );
    }

    #[test]
    fn plain_text_and_stray_braces() {
        let template = Template::parse("no fields } {").expect("valid");
        assert_eq!(template.render(&json!({})).expect("text"), "no fields } {");
        assert_eq!(Template::parse("a {{b"), Err(TemplateError::Unclosed(2)));
        assert_eq!(Template::parse("{{ }}"), Err(TemplateError::Empty(0)));
    }
}
