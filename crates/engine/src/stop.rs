//! Streaming text with stop strings: decoded text is released as soon as it can no longer turn
//! out to be the start of a stop string, and generation ends at the first stop string (which is
//! not part of the output).

/// Accumulates decoded text and decides what may be shown.
#[derive(Clone, Debug, Default)]
pub struct StopText {
    stops: Vec<String>,
    text: String,
    emitted: usize,
    stopped: bool,
}

impl StopText {
    /// A stream that ends at any of `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopText {
        StopText {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Default::default()
        }
    }

    /// Adds decoded text; returns the newly releasable text. After a stop string is found,
    /// [`StopText::stopped`] is true and nothing more is accepted.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        let search_from = self.emitted.saturating_sub(self.max_stop_len());
        let search_from = floor_char_boundary(&self.text, search_from);
        self.text.push_str(piece);
        let hit = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = hit {
            self.text.truncate(at);
            self.stopped = true;
            return self.release(at);
        }
        // Hold back a suffix that could still grow into a stop string.
        let mut safe = self.text.len();
        for s in &self.stops {
            for k in (1..s.len()).rev() {
                if self.text.len() >= k && s.is_char_boundary(k) && self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                    break;
                }
            }
        }
        self.release(safe)
    }

    /// Releases everything still held back (the stream ended without a stop string).
    pub fn finish(&mut self) -> String {
        let end = self.text.len();
        self.release(end)
    }

    /// Whether a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The whole output so far (without the stop string).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn release(&mut self, upto: usize) -> String {
        let upto = floor_char_boundary(&self.text, upto.max(self.emitted));
        let out = self.text[self.emitted..upto].to_string();
        self.emitted = upto;
        out
    }

    fn max_stop_len(&self) -> usize {
        self.stops.iter().map(String::len).max().unwrap_or(0)
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut st = StopText::new(&stops);
        let mut out: Vec<String> = pieces.iter().map(|p| st.push(p)).collect();
        out.push(st.finish());
        (out, st.text().to_string(), st.stopped())
    }

    #[test]
    fn without_stops_text_flows_through_unchanged() {
        let (out, text, stopped) = run(&[], &["Hel", "lo", " wörld"]);
        assert_eq!(out, vec!["Hel", "lo", " wörld", ""]);
        assert_eq!(text, "Hello wörld");
        assert!(!stopped);
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_never_shown() {
        let (out, text, stopped) = run(&["\n\nUser:"], &["Hi", "\n", "\nUs", "er:", " more"]);
        assert_eq!(out.concat(), "Hi");
        assert_eq!(out[1], "", "a possible stop prefix is held back");
        assert_eq!(text, "Hi");
        assert!(stopped);
    }

    #[test]
    fn a_held_back_prefix_is_released_when_it_turns_out_not_to_stop() {
        let (out, text, stopped) = run(&["END"], &["the E", "ND", "?"]);
        assert_eq!(
            (out.concat(), text, stopped),
            ("the ".into(), "the ".into(), true)
        );
        let (out, text, stopped) = run(&["END"], &["the E", "nd"]);
        assert_eq!(out, vec!["the ", "End", ""]);
        assert_eq!((text, stopped), ("the End".into(), false));
    }

    #[test]
    fn the_earliest_of_several_stops_wins() {
        let (_, text, _) = run(&["b", "a"], &["xxab"]);
        assert_eq!(text, "xx");
    }
}
