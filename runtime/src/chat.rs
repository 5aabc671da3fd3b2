//! Chat: the model's own Jinja chat template (from `tokenizer_config.json` or GGUF metadata),
//! rendered with minijinja the way transformers renders it, and conversations that feed only
//! the new tokens of each turn into the sequence state.

mod guard;

use guard::{check_format_string, check_namespaces};
use minijinja::value::{Rest, ValueOrKwargs};
use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, RuntimeError};
use crate::generate::{GenerateOptions, Generated, generate_with};
use crate::model::{Model, State, snapshot};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A chat template with the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    pub source: String,
    pub bos_token: String,
    pub eos_token: String,
    /// Stop sequences that end a reply besides the end-of-turn token (the plain template's
    /// `"\nUser:"`).
    pub stop: Vec<String>,
    /// Whether the rendered text carries its own special tokens (a model's template, encoded
    /// as written) or is plain text the tokenizer adds them to ([`ChatTemplate::plain`]).
    pub writes_special_tokens: bool,
}

/// The plain chat format (see [`ChatTemplate::plain`]): `Role: content` lines, then
/// `Assistant:` where the reply begins.
const PLAIN: &str = "{% for m in messages %}
{% if m.role == 'system' %}System{% elif m.role == 'user' %}User{% elif m.role == 'assistant' %}Assistant{% else %}{{ m.role }}{% endif %}: {{ m.content }}
{% endfor %}
{% if add_generation_prompt %}Assistant:{% endif %}";

fn template_error(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Template(e.to_string())
}

/// The work one render may do, in minijinja's fuel (about one unit per instruction, and one
/// per 64 bytes of strings and lists built): a fixed allowance plus some per byte of the
/// messages. A template is code from a model file; without a budget `{% for i in range(99999)
/// %}{% for j in range(99999) %}` runs for hours and `'x' * 99999999` in a loop allocates
/// without bound. Real templates use a few hundred units per message plus their output.
const FUEL_BASE: u64 = 2_000_000;
const FUEL_PER_MESSAGE_BYTE: u64 = 4;
/// Nesting of loops, conditions, macro calls and includes (minijinja's default is 500; real
/// templates nest a few levels). Kept well below the default because renders run on threads
/// with 2 MiB stacks (tokio's workers in the server, the test harness's threads).
const RECURSION_LIMIT: usize = 64;

/// A special token as `tokenizer_config.json` writes it: a string or `{"content": ...}`.
fn token_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// A model's template `source` with its special tokens.
    pub fn new(source: impl Into<String>, bos_token: impl Into<String>, eos_token: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            stop: Vec::new(),
            writes_special_tokens: true,
        }
    }

    /// The chat format of a model without a template of its own (a base model, the embedded
    /// demo model): one line per message, `System: …`, `User: …` or `Assistant: …` (other
    /// roles as given), then `Assistant:` where the reply begins. A reply ends at the model's
    /// end of sequence or at `"\nUser:"`, where the model would go on to write the user's next
    /// turn. The tokenizer adds its special tokens, as to any prompt. `minimax chat`, the
    /// server's chat completions and every other chat surface use this one format.
    pub fn plain() -> Self {
        Self {
            source: PLAIN.into(),
            bos_token: String::new(),
            eos_token: String::new(),
            stop: vec!["\nUser:".into()],
            writes_special_tokens: false,
        }
    }

    /// The ids of `text` rendered by this template: as written where it writes its own
    /// special tokens, else with the tokenizer's.
    pub fn encode(&self, tokenizer: &crate::tokenizer::Tokenizer, text: &str) -> Result<Vec<u32>, RuntimeError> {
        if self.writes_special_tokens { tokenizer.encode_plain(text) } else { tokenizer.encode(text) }
    }

    /// The template of a `tokenizer_config.json`, if it has one: `chat_template` as a string,
    /// or the entry named "default" of a list of named templates.
    pub fn from_tokenizer_config(json: &str) -> Result<Option<Self>, RuntimeError> {
        let config: Value = serde_json::from_str(json).map_err(template_error)?;
        let source = match config.get("chat_template") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(list)) => {
                let named = |name: &str| {
                    list.iter()
                        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
                        .and_then(|t| t.get("template"))
                        .and_then(Value::as_str)
                };
                match named("default").or_else(|| list.first().and_then(|t| t.get("template")?.as_str())) {
                    Some(s) => s.to_string(),
                    None => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(Self::new(source, token_text(config.get("bos_token")), token_text(config.get("eos_token")))))
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// reply begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, RuntimeError> {
        let mut env = Environment::new();
        let text: u64 = messages.iter().map(|m| (m.role.len() + m.content.len()) as u64).sum();
        env.set_fuel(Some(FUEL_BASE.saturating_add(text.saturating_mul(FUEL_PER_MESSAGE_BYTE))));
        env.set_recursion_limit(RECURSION_LIMIT);
        // transformers compiles templates with trim_blocks and lstrip_blocks.
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(template_error)?,
        );
        // Templates call Python string methods (`.strip()`, `.startswith()`, ...).
        env.set_unknown_method_callback(|state, value, method, args| {
            if method == "format" {
                check_format_string(value.as_str().unwrap_or_default())?;
            }
            minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
        });
        env.add_filter("format", |state: &mut minijinja::State, format: &minijinja::Value, args: Rest<ValueOrKwargs>| {
            check_format_string(format.as_str().unwrap_or_default())?;
            minijinja::filters::format(state, format, args)
        });
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |format: String| today(&format));
        check_namespaces(&self.source).map_err(template_error)?;
        env.add_template("chat", &self.source).map_err(template_error)?;
        env.get_template("chat")
            .and_then(|t| {
                t.render(context! {
                    messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                    add_generation_prompt => add_generation_prompt,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                })
            })
            .map_err(template_error)
    }
}

/// Today's UTC date for `strftime_now` (templates use it for a "Today Date" line); supports
/// `%d`, `%m`, `%Y`, `%b` and `%B`.
fn today(format: &str) -> String {
    #[cfg(not(target_arch = "wasm32"))]
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0) as i64;
    #[cfg(target_arch = "wasm32")]
    let days = 0i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
        "November", "December",
    ];
    let name = MONTHS[(month - 1) as usize];
    format
        .replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", name)
        .replace("%b", &name[..3])
}

/// A conversation and the state of the model that has read it.
///
/// Each turn renders the whole conversation with the template, but feeds the model only the
/// tokens past those it has already consumed; when the rendering does not extend what was fed
/// (a template that rewrites history), the state restarts from scratch.
#[derive(Debug, Clone)]
pub struct Conversation {
    pub messages: Vec<Message>,
    pub state: State,
    /// Every token fed into `state`, in order.
    pub fed: Vec<u32>,
}

impl Conversation {
    pub fn new(model: &Model) -> Self {
        Self {
            messages: Vec::new(),
            state: model.new_state(),
            fed: Vec::new(),
        }
    }

    /// Forgets everything.
    pub fn reset(&mut self, model: &Model) {
        *self = Self::new(model);
    }

    /// Adds `user`'s message and streams the assistant's reply token by token into `on_token`.
    /// `encode` turns the rendered prompt into ids; generation stops at any of `stop` ids.
    pub async fn reply(
        &mut self,
        model: &Model,
        template: &ChatTemplate,
        encode: impl Fn(&str) -> Result<Vec<u32>, RuntimeError>,
        user: &str,
        options: &GenerateOptions,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generated, Error> {
        self.reply_with(model, template, encode, user, options, &mut |_, _| {}, on_token).await
    }

    /// [`reply`](Self::reply), calling `on_prefill(fed, of)` as the new part of the prompt
    /// (`of` tokens: the turn, or the whole conversation after a reset) goes in by chunks.
    #[allow(clippy::too_many_arguments)]
    pub async fn reply_with(
        &mut self,
        model: &Model,
        template: &ChatTemplate,
        encode: impl Fn(&str) -> Result<Vec<u32>, RuntimeError>,
        user: &str,
        options: &GenerateOptions,
        on_prefill: &mut dyn FnMut(usize, usize),
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generated, Error> {
        self.messages.push(Message::new("user", user));
        let ids = encode(&template.render(&self.messages, true)?)?;
        if !ids.starts_with(&self.fed) || ids.len() == self.fed.len() {
            self.state = model.new_state();
            self.fed.clear();
        }
        let new = ids[self.fed.len()..].to_vec();
        let of = new.len();
        let generated =
            generate_with(model, &mut self.state, &new, options, &mut |fed| on_prefill(fed, of), on_token).await?;
        // The last token of a reply cut by max_tokens or a cancel was sampled but never fed:
        // the state's position says how many were.
        let consumed = self.state.position.saturating_sub(ids.len()).min(generated.tokens.len());
        self.fed = ids;
        self.fed.extend(&generated.tokens[..consumed]);
        Ok(generated)
    }

    /// Records the assistant's reply text (what the template will show next turn).
    pub fn push_reply(&mut self, text: &str) {
        self.messages.push(Message::new("assistant", text));
    }

    /// The conversation as a state file (see [`crate::model::snapshot`]): the model's state plus
    /// the messages and fed tokens. Cheap for lightning layers, whose state does not grow.
    pub async fn save(&self, model: &Model) -> Result<Vec<u8>, Error> {
        let extra = serde_json::json!({"messages": self.messages, "fed": self.fed}).to_string();
        snapshot::save(model, &self.state, &extra).await
    }

    /// Restores a conversation saved by [`save`](Self::save) for the same model.
    pub fn load(model: &Model, bytes: &[u8]) -> Result<Self, Error> {
        let (state, extra) = snapshot::load(model, bytes)?;
        #[derive(Deserialize)]
        struct Saved {
            messages: Vec<Message>,
            fed: Vec<u32>,
        }
        let saved: Saved =
            serde_json::from_str(&extra).map_err(|e| RuntimeError::StateFile(format!("conversation: {e}")))?;
        if saved.fed.len() != state.position {
            return Err(RuntimeError::StateFile("conversation and state disagree".into()).into());
        }
        Ok(Self {
            messages: saved.messages,
            state,
            fed: saved.fed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-Instruct's template (ChatML with a default system prompt).
    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn renders_chatml() {
        let config = serde_json::json!({"chat_template": CHATML, "eos_token": "<|im_end|>"}).to_string();
        let t = ChatTemplate::from_tokenizer_config(&config).unwrap().unwrap();
        let text = t.render(&[Message::new("user", "Hi!")], true).unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    /// The plain format, line by line, with and without the generation prompt.
    #[test]
    fn plain_template_writes_role_lines() {
        let t = ChatTemplate::plain();
        let messages = [
            Message::new("system", "Be brief."),
            Message::new("user", "Hi {{ there }}!"),
            Message::new("assistant", "Hello."),
            Message::new("tool", "42"),
        ];
        assert_eq!(
            t.render(&messages, true).unwrap(),
            "System: Be brief.\nUser: Hi {{ there }}!\nAssistant: Hello.\ntool: 42\nAssistant:"
        );
        assert_eq!(t.render(&messages[..1], false).unwrap(), "System: Be brief.\n");
        assert_eq!(t.stop, ["\nUser:"]);
        assert!(!t.writes_special_tokens);
    }

    #[test]
    fn python_methods_blocks_and_exceptions() {
        let source = "{{ bos_token }}{% for m in messages %}\n  {% if m.role not in ['user', 'assistant'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}\n  [{{ m.role.upper() }}] {{ m.content.strip() }}\n{% endfor %}";
        let t = ChatTemplate::new(source, "<s>", "</s>");
        // trim_blocks + lstrip_blocks: block tags leave no whitespace behind.
        assert_eq!(t.render(&[Message::new("user", "  hello ")], false).unwrap(), "<s>  [USER] hello\n");
        let err = t.render(&[Message::new("tool", "x")], false).unwrap_err();
        assert!(err.to_string().contains("bad role tool"), "{err}");
    }

    /// A template from a model file cannot loop, recurse or allocate without bound: each
    /// render has a budget (see FUZZING.md).
    #[test]
    fn hostile_templates_are_stopped() {
        let render = |source: &str| {
            let t = ChatTemplate::new(source, "", "");
            let result = t.render(&[Message::new("user", "Hi!")], true);
            result.map(|_| ()).unwrap_err().to_string()
        };
        // Without the budget these finish, after 9M iterations and with a 512 MiB string.
        let e = render("{% for i in range(3000) %}{% for j in range(3000) %}{{ i }}{% endfor %}{% endfor %}");
        assert!(e.contains("fuel"), "{e}");
        let e = render("{% set s = namespace(x='ab') %}{% for i in range(28) %}{% set s.x = s.x ~ s.x %}{% endfor %}{{ s.x | length }}");
        assert!(e.contains("fuel"), "{e}");
        let e = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
        assert!(e.contains("recursion"), "{e}");
        // A namespace holding itself, which minijinja would print (or compare, or serialize)
        // until the stack overflows.
        let e = render("{% set x = namespace() %}{% set x.a = x %}{{ x }}");
        assert!(e.contains("the namespace `x` may only be used through its attributes"), "{e}");
        // Format keys with non-ASCII text, where minijinja would panic, are refused; other
        // format strings still work.
        for source in ["{{ '%(-۔' | format('x', 2) }}", "{{ '{0[é]}'.format({}) }}"] {
            assert!(render(source).contains("format strings with keys must be ASCII"), "{source}");
        }
        let t = ChatTemplate::new("{{ 'é %s-%d' | format('x', 2) }} {{ '{}!'.format('hi') }}", "", "");
        assert_eq!(t.render(&[], false).unwrap(), "é x-2 hi!");
        // Real templates stay well within the budget, for long conversations too.
        let chat: Vec<Message> = (0..200).map(|i| Message::new(["user", "assistant"][i % 2], &"word ".repeat(2000))).collect();
        let t = ChatTemplate::new(CHATML, "", "");
        assert!(t.render(&chat, true).unwrap().len() > 2_000_000);
    }

    #[test]
    fn named_templates_and_dates() {
        let config = serde_json::json!({"chat_template": [
            {"name": "tool_use", "template": "tools"},
            {"name": "default", "template": "{{ strftime_now('%d %b %Y') }}"}
        ]})
        .to_string();
        let t = ChatTemplate::from_tokenizer_config(&config).unwrap().unwrap();
        let date = t.render(&[], false).unwrap();
        assert_eq!(date.len(), 11, "{date}");
        assert!(date.ends_with("2026") || date[7..].parse::<u32>().unwrap() > 2025, "{date}");
        assert!(ChatTemplate::from_tokenizer_config("{}").unwrap().is_none());
    }
}
