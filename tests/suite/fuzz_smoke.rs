//! The always-on form of the fuzzing of RELIABILITY.md §3: a bounded,
//! deterministic mutation fuzzer ([`cardc::fuzzing::mutate`]) over every
//! fuzz target's entry point, seeded from the committed corpus
//! (`fuzz/corpus/<target>/`). Each target is one test, so they run in
//! parallel; the input counts make each take roughly 7–15 s in the test
//! build on a 2-core box (twice that under heavy load). `CARDC_FUZZ_SMOKE_SCALE` multiplies the counts
//! (e.g. 20 for a longer local run) and `CARDC_FUZZ_SMOKE_SEED` picks
//! other inputs. A panic fails the test and prints the input in hex (and
//! keeps it in the temporary directory) so that it can be fixed and added
//! to `fuzz/regressions/<target>/`.
//!
//! Also here: the small decks of the `deck_decode` seed corpus and of the
//! bad-input matrix, made through the library.

use cardc::card::Card;
use cardc::data::Normalization;
use cardc::deck::{Deck, DeckProvenance, GateKind, GateSettings, Member, Metric, Scope};
use cardc::fuzzing::{TARGETS, mutate};
use cardc::ir::models::{BuildOptions, ModelDesc, build_from_desc, load_desc};
use cardc::model::{Model, Precision, WeightState};
use cardc::rng::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The committed seeds of `target`, in name order.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Runs `inputs` (times the scale) mutated seeds through `target`'s entry
/// point; fails on the first panic, printing the input.
fn smoke(target: &str, inputs: usize) {
    let (_, entry) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"));
    let n = (inputs as f64 * env_or("CARDC_FUZZ_SMOKE_SCALE", 1.0)).round() as usize;
    let seed = env_or("CARDC_FUZZ_SMOKE_SEED", 0x5eed_u64);
    match mutate::run(entry, seeds(target), n, seed) {
        Ok(s) => eprintln!(
            "{target}: {} mutated inputs (seed {seed:#x}), {} accepted, no panic, {:.1} s, slowest {:.0} ms",
            s.inputs,
            s.accepted,
            s.elapsed.as_secs_f64(),
            s.slowest.as_secs_f64() * 1e3
        ),
        Err(crash) => {
            let keep = std::env::temp_dir().join(format!("cardc-{target}-crash-{}", crash.index));
            let _ = std::fs::write(&keep, &crash.input);
            panic!(
                "{target} (seed {seed:#x}, kept as {}): {crash}",
                keep.display()
            );
        }
    }
}

// Input counts: the readers differ a lot in cost per input (the CIFAR
// readers go through real files and the thread pool; a deck input decodes
// several cards and their spectra).
#[test]
fn card_decode() {
    smoke("card_decode", 160_000);
}

#[test]
fn cifar_reader() {
    smoke("cifar_reader", 12_000);
}

#[test]
fn deck_decode() {
    smoke("deck_decode", 160_000);
}

#[test]
fn npy_reader() {
    smoke("npy_reader", 8_000);
}

#[test]
fn onnx_import() {
    smoke("onnx_import", 100_000);
}

/// A tiny plain model card (`c2 M`, optionally an f16 or int8 or binary
/// first conv, or a pruned one) for `input` and `classes`.
pub fn tiny_card(input: [usize; 3], classes: usize, seed: u64, storage: &str) -> Card {
    let desc = ModelDesc {
        input,
        classes,
        layers: vec!["c2".into(), "M".into()],
        fc: vec![],
        ..load_desc("conv4").unwrap()
    };
    let graph = build_from_desc(&desc, &BuildOptions::default()).unwrap();
    let mut model = Model::init(graph, seed).unwrap();
    let (node, k) = model.prunable()[0];
    let t = &mut model.params[node][k];
    let n = t.data.len();
    match storage {
        "f32" => {}
        "f16" => {
            t.precision = Precision::F16;
            for v in &mut t.data {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        "int8" => {
            let oc = t.shape[0];
            let scales = cardc::compress::quantize::maxabs_scales(&t.data, oc);
            let per = n / oc;
            for (i, v) in t.data.iter_mut().enumerate() {
                let s = scales[i / per];
                *v = (*v / s).round().clamp(-127.0, 127.0) * s;
            }
            t.precision = Precision::Int8 { scales };
        }
        "binary" => {
            t.state = WeightState::Binary {
                mask: (0..n).map(|i| i % 4 != 0).collect(),
                alpha: 0.25,
            };
        }
        "pruned" => {
            t.state = WeightState::Masked {
                mask: (0..n).map(|i| i % 3 == 0).collect(),
            };
            t.apply_mask();
        }
        other => panic!("storage {other}"),
    }
    let c = input[0];
    Card::new(
        model,
        Normalization {
            mean: vec![0.5; c],
            std: vec![0.25; c],
        },
        (0..classes).map(|i| format!("k{i}")).collect(),
    )
}

/// A deck of `cards` with made-up (seeded) signatures and reference of the
/// first card's input size. It is not validated here: the bad-input matrix
/// makes inconsistent ones on purpose.
pub fn tiny_deck(cards: Vec<Card>, gate: GateSettings) -> Deck {
    let len: usize = cards[0].model.graph.input_shape().iter().product();
    let mut rng = Rng::new(cards.len() as u64);
    let mut spectrum =
        |scale: f32| -> Vec<f32> { (0..len).map(|_| scale * rng.normal()).collect() };
    let augments = ["gaussian:0.1", "augmix", "flipcrop"];
    let members = cards
        .into_iter()
        .enumerate()
        .map(|(i, card)| Member {
            name: format!("m{}", i + 1),
            card,
            augment: augments[i % 3].into(),
            signature: spectrum(0.5),
        })
        .collect();
    Deck {
        members,
        gate,
        reference: spectrum(1.0),
        provenance: DeckProvenance {
            data: "synthetic:10".into(),
            images: 10,
            cardc_version: "fuzz-seed".into(),
            ..DeckProvenance::default()
        },
        metrics: BTreeMap::new(),
    }
}

/// The `deck_decode` seeds: two small decks (whole files) and their bare
/// payloads (`P` + payload, see `fuzzing::deck`), 1x8x8 and 3x4x4 inputs,
/// every gate setting, and member cards stored as f32, f16, int8, binary
/// and pruned.
fn deck_seeds() -> Vec<(String, Vec<u8>)> {
    let gate = |kind, k, metric, scope| GateSettings {
        kind,
        k,
        metric,
        scope,
    };
    let decks = [
        (
            "gray-spectral",
            tiny_deck(
                vec![
                    tiny_card([1, 8, 8], 3, 1, "f32"),
                    tiny_card([1, 8, 8], 3, 2, "pruned"),
                ],
                gate(GateKind::Spectral, 1, Metric::L1, Scope::Input),
            ),
        ),
        (
            "rgb-average",
            tiny_deck(
                vec![
                    tiny_card([3, 4, 4], 4, 3, "f16"),
                    tiny_card([3, 4, 4], 4, 4, "int8"),
                    tiny_card([3, 4, 4], 4, 5, "binary"),
                ],
                gate(GateKind::Average, 3, Metric::Cosine, Scope::Batch),
            ),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (name, deck) in decks {
        let p = dir.path().join("d.deck");
        deck.save(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let payload = [b"P".as_slice(), &bytes[28..]].concat();
        out.push((name.to_string(), bytes));
        out.push((format!("{name}-payload"), payload));
    }
    out
}

/// The committed `deck_decode` seeds are what [`deck_seeds`] makes, and
/// decode. `CARDC_WRITE_DECK_SEEDS=1` rewrites them (after a format change).
#[test]
fn deck_seed_corpus_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/deck_decode");
    let write = std::env::var_os("CARDC_WRITE_DECK_SEEDS").is_some();
    for (name, bytes) in deck_seeds() {
        cardc::fuzzing::deck(&bytes).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let path = dir.join(&name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        // Seeds stay small: the smoke run and libFuzzer copy them a lot.
        assert!(bytes.len() < 16_000, "{name}: {} bytes", bytes.len());
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == bytes,
            "{}: differs from what this test makes (run with CARDC_WRITE_DECK_SEEDS=1)",
            path.display()
        );
    }
}
