//! Fuzzy text matching: the terms of one text field (see [`super::terms`]) within
//! [`query::fuzzy_distance`] edits of a query token, as [`query::token_matches`] says.
//!
//! The automaton is tantivy's own (the `levenshtein_automata` DFA that `FuzzyTermQuery`
//! builds, transpositions costing one), run after an exact match of the field's term
//! prefix. That DFA counts edits by characters, not bytes, and computes the optimal
//! string alignment distance (a transposed pair is not edited again), which is what
//! `strsim::osa_distance` computes; `automaton_is_osa` below checks it exhaustively over
//! a small alphabet with a two-byte character.

use annostore_core::query;
use levenshtein_automata::{DFA, Distance, LevenshteinAutomatonBuilder, SINK_STATE};
use std::sync::{Arc, OnceLock};
use tantivy::query::{AutomatonWeight, EnableScoring, Query, Weight};
use tantivy::schema::Field;

/// The builder for `distance` edits (1 or 2), transpositions costing one. Building one
/// takes milliseconds, so each is built once.
fn builder(distance: u8) -> Option<&'static LevenshteinAutomatonBuilder> {
    static ONE: OnceLock<LevenshteinAutomatonBuilder> = OnceLock::new();
    static TWO: OnceLock<LevenshteinAutomatonBuilder> = OnceLock::new();
    let cell = match distance {
        1 => &ONE,
        2 => &TWO,
        _ => return None,
    };
    Some(cell.get_or_init(|| LevenshteinAutomatonBuilder::new(distance, true)))
}

/// The DFA accepting the tokens within `distance` edits of `token`, if the distance is
/// one the builder knows (1 or 2).
pub(crate) fn dfa(token: &str, distance: u8) -> Option<DFA> {
    builder(distance).map(|b| b.build_dfa(token))
}

/// Terms that start with `prefix` and whose rest the DFA accepts.
pub(crate) struct PrefixedDfa {
    prefix: Vec<u8>,
    dfa: DFA,
}

/// Where the automaton is: within the prefix, in the DFA, or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Prefix(usize),
    Dfa(u32),
    Dead,
}

impl tantivy_fst::Automaton for PrefixedDfa {
    type State = State;

    fn start(&self) -> State {
        if self.prefix.is_empty() {
            State::Dfa(self.dfa.initial_state())
        } else {
            State::Prefix(0)
        }
    }

    fn is_match(&self, state: &State) -> bool {
        match state {
            State::Dfa(s) => matches!(self.dfa.distance(*s), Distance::Exact(_)),
            _ => false,
        }
    }

    fn can_match(&self, state: &State) -> bool {
        match state {
            State::Prefix(_) => true,
            State::Dfa(s) => *s != SINK_STATE,
            State::Dead => false,
        }
    }

    fn accept(&self, state: &State, byte: u8) -> State {
        match *state {
            State::Prefix(i) if self.prefix.get(i) == Some(&byte) => {
                if i + 1 == self.prefix.len() {
                    State::Dfa(self.dfa.initial_state())
                } else {
                    State::Prefix(i + 1)
                }
            }
            State::Dfa(s) => State::Dfa(self.dfa.transition(s, byte)),
            State::Prefix(_) | State::Dead => State::Dead,
        }
    }
}

/// Documents with a term `prefix` + a token within `distance` (1 or 2) edits of
/// `token`.
#[derive(Debug, Clone)]
pub(crate) struct FuzzyTokenQuery {
    field: Field,
    prefix: Vec<u8>,
    token: String,
    distance: u8,
}

impl FuzzyTokenQuery {
    pub(crate) fn new(field: Field, prefix: Vec<u8>, token: &str) -> FuzzyTokenQuery {
        FuzzyTokenQuery {
            field,
            prefix,
            token: token.to_owned(),
            distance: query::fuzzy_distance(token),
        }
    }
}

impl Query for FuzzyTokenQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        let dfa = dfa(&self.token, self.distance).ok_or_else(|| {
            tantivy::TantivyError::InvalidArgument(format!(
                "no fuzzy automaton for {} edits",
                self.distance
            ))
        })?;
        let automaton = PrefixedDfa {
            prefix: self.prefix.clone(),
            dfa,
        };
        Ok(Box::new(AutomatonWeight::<PrefixedDfa>::new(
            self.field,
            Arc::new(automaton),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy_fst::Automaton;

    fn words(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            let next: Vec<String> = last
                .iter()
                .flat_map(|w| {
                    alphabet.iter().map(move |c| {
                        let mut w = w.clone();
                        w.push(*c);
                        w
                    })
                })
                .collect();
            all.extend(next.iter().cloned());
            last = next;
        }
        all
    }

    fn run(a: &PrefixedDfa, bytes: &[u8]) -> bool {
        let mut s = a.start();
        for b in bytes {
            s = a.accept(&s, *b);
        }
        a.is_match(&s)
    }

    /// Every query token of 3 to 6 characters (1 and 2 edits) against every token of up
    /// to 6, over an alphabet with a two-byte character: the automaton accepts exactly
    /// what `token_matches` (strsim's OSA distance, by characters) does. Among them are
    /// the pairs where OSA and true Damerau-Levenshtein differ ("abé" vs "éa": 3 and 2).
    #[test]
    fn automaton_is_osa() {
        let all = words(&['a', 'b', 'é'], 6);
        let mut checked = 0u64;
        for q in all.iter().filter(|w| w.chars().count() >= 3) {
            let a = PrefixedDfa {
                prefix: vec![1, 2],
                dfa: dfa(q, query::fuzzy_distance(q)).unwrap(),
            };
            for t in &all {
                let mut term = vec![1, 2];
                term.extend_from_slice(t.as_bytes());
                assert_eq!(
                    run(&a, &term),
                    query::token_matches(q, t, true),
                    "{q:?} ~ {t:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 1_000_000);
        assert_eq!(strsim::osa_distance("abé", "éa"), 3);
        assert_eq!(strsim::damerau_levenshtein("abé", "éa"), 2);
    }

    #[test]
    fn the_prefix_must_match_exactly() {
        let a = PrefixedDfa {
            prefix: b"label".to_vec(),
            dfa: dfa("curtian", 2).unwrap(),
        };
        assert!(run(&a, b"labelcurtain"));
        assert!(!run(&a, b"lbaelcurtain"));
        assert!(!run(&a, b"curtain"));
        assert!(!run(&a, b"label"));
        assert!(dfa("ab", 0).is_none());
    }
}
