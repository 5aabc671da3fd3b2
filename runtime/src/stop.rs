//! Stop sequences on streamed text: text is released only once it cannot be the start of a
//! stop sequence, so that a stop string split across tokens never reaches the client.

/// What [`StopMatcher::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Text that is safe to send (possibly empty); generation goes on.
    Release(String),
    /// A stop sequence matched: the text before it, which is the last text to send.
    Stopped(String),
}

/// Holds back the tail of the text that might grow into one of the stop sequences.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    /// Empty strings are ignored (they would match everywhere).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
        }
    }

    /// Feeds the next piece of decoded text.
    pub fn push(&mut self, piece: &str) -> Pushed {
        self.pending.push_str(piece);
        if self.stops.is_empty() {
            return Pushed::Release(std::mem::take(&mut self.pending));
        }
        // The earliest match wins, whichever sequence it is.
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            self.pending.truncate(at);
            return Pushed::Stopped(std::mem::take(&mut self.pending));
        }
        // Keep the longest suffix that is a proper prefix of some stop sequence.
        let keep_from = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops.iter().any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let rest = self.pending.split_off(keep_from);
        Pushed::Release(std::mem::replace(&mut self.pending, rest))
    }

    /// The held-back text once generation has ended without a match.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                Pushed::Release(t) => out.push_str(&t),
                Pushed::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn no_stops_pass_everything() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&[""], &["a", "b"]), ("ab".into(), false));
    }

    #[test]
    fn a_stop_split_across_pieces_is_cut() {
        assert_eq!(run(&["\nUser:"], &["Hello", "\nUs", "er: hi"]), ("Hello".into(), true));
        assert_eq!(run(&["end"], &["the e", "nd of it"]), ("the ".into(), true));
    }

    #[test]
    fn held_text_is_released_when_the_prefix_breaks_or_ends() {
        let mut m = StopMatcher::new(vec!["STOP".into()]);
        assert_eq!(m.push("go ST"), Pushed::Release("go ".into()));
        assert_eq!(m.push("ay"), Pushed::Release("STay".into()));
        assert_eq!(m.push(" S"), Pushed::Release(" ".into()));
        assert_eq!(m.finish(), "S");
    }

    #[test]
    fn earliest_match_wins_and_multibyte_text_is_safe() {
        assert_eq!(run(&["cd", "b"], &["abcd"]), ("a".into(), true));
        assert_eq!(run(&["é!"], &["caf", "é", "é", "!x"]), ("café".into(), true));
        assert_eq!(run(&["ü"], &["naïve"]), ("naïve".into(), false));
    }
}
