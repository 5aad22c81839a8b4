//! The `.card` container: exact round trips of dense, masked and binary
//! weights, compressed sizes, the generic envelope's refusal of damaged,
//! truncated, foreign, future and mismatched files (one-line messages naming
//! the file), atomic writes, bit packing, quantized decodings and the
//! `info` summary.

use cardc::card::container::{FORMAT_VERSION, HEADER_LEN};
use cardc::card::{
    Card, CardError, Kind, Provenance, StoredModel, StoredTensor, pack_bits, read, read_header,
    summary, summary_text, unpack_bits, write_atomic,
};
use cardc::data::Normalization;
use cardc::ir::models::build;
use cardc::model::{Model, WeightState};
use cardc::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn model(arch: &str, seed: u64) -> Model {
    let g = build(arch, &Default::default()).expect("builds");
    Model::init(g, seed).expect("init")
}

fn card_of(model: Model) -> Card {
    let classes = model.graph.classes();
    let mut card = Card::new(
        model,
        Normalization {
            mean: vec![0.49, 0.48, 0.45],
            std: vec![0.25, 0.24, 0.26],
        },
        (0..classes).map(|i| format!("class{i}")).collect(),
    );
    card.provenance = Provenance {
        method: "gmp".into(),
        arch: "resnet20".into(),
        sparsity: 0.9,
        augment: "flipcrop".into(),
        seed: 7,
        data: "synthetic:500".into(),
        data_digest: "abc123".into(),
        backend: "cpu".into(),
        epochs: 3,
        notes: vec!["made by a test".into()],
        ..Default::default()
    };
    card.provenance.stamp();
    card.metrics.insert("accuracy".into(), 0.8125);
    card.metrics.insert("ece".into(), 0.031);
    card
}

/// Masks every prunable weight, keeping a pseudo-random `keep` fraction.
fn mask_all(m: &mut Model, keep: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    for (i, k) in m.prunable() {
        let t = &mut m.params[i][k];
        let mask: Vec<bool> = (0..t.data.len()).map(|_| rng.uniform() < keep).collect();
        t.state = WeightState::Masked { mask };
    }
}

/// Binarizes every prunable weight with a `keep` fraction kept.
fn binarize_all(m: &mut Model, keep: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    for (i, k) in m.prunable() {
        let t = &mut m.params[i][k];
        let mask: Vec<bool> = (0..t.data.len()).map(|_| rng.uniform() < keep).collect();
        t.state = WeightState::Binary {
            mask,
            alpha: 0.03 + i as f32 * 1e-3,
        };
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Effective weights bit-exact, states equal, everything else equal.
fn assert_same(a: &Card, b: &Card) {
    assert_eq!(a.model.graph, b.model.graph);
    assert_eq!(a.model.params.len(), b.model.params.len());
    for (ta, tb) in a
        .model
        .params
        .iter()
        .flatten()
        .zip(b.model.params.iter().flatten())
    {
        assert_eq!(ta.kind, tb.kind);
        assert_eq!(ta.shape, tb.shape);
        assert_eq!(ta.state, tb.state);
        assert_eq!(bits(&ta.effective()), bits(&tb.effective()));
    }
    assert_eq!(a.normalization, b.normalization);
    assert_eq!(a.class_names, b.class_names);
    assert_eq!(a.provenance, b.provenance);
    assert_eq!(a.metrics, b.metrics);
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// The error is one line, names the file and says `needle`.
fn assert_err<T: std::fmt::Debug>(r: Result<T, CardError>, path: &Path, needle: &str) {
    let e = r.expect_err("should fail").to_string();
    assert!(!e.contains('\n'), "multi-line: {e}");
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(e.contains(&*name), "no file name in: {e}");
    assert!(e.contains(needle), "expected '{needle}' in: {e}");
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn saved(dir: &Path, name: &str, card: &Card) -> PathBuf {
    let p = dir.join(name);
    card.save(&p).expect("save");
    p
}

// ---------------------------------------------------------------- bits

#[test]
fn bit_packing_round_trips_every_length() {
    let mut rng = Rng::new(3);
    for n in [0usize, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 1001] {
        let v: Vec<bool> = (0..n).map(|_| rng.uniform() < 0.5).collect();
        let p = pack_bits(&v);
        assert_eq!(p.len(), n.div_ceil(8), "n={n}");
        assert_eq!(unpack_bits(&p, n), v, "n={n}");
        for all in [true, false] {
            let v = vec![all; n];
            assert_eq!(unpack_bits(&pack_bits(&v), n), v);
        }
    }
}

#[test]
fn bit_packing_is_lsb_first_with_zero_padding() {
    assert_eq!(pack_bits(&[true]), vec![0x01]);
    assert_eq!(pack_bits(&[false, true, true]), vec![0x06]);
    let mut v = vec![false; 9];
    v[7] = true;
    v[8] = true;
    assert_eq!(pack_bits(&v), vec![0x80, 0x01]);
    assert!(pack_bits(&[]).is_empty());
    // Missing bytes read as false rather than panicking.
    assert_eq!(
        unpack_bits(&[0xff], 10),
        [vec![true; 8], vec![false; 2]].concat()
    );
}

// ---------------------------------------------------------------- round trips

#[test]
fn resnet20_with_masked_and_binary_tensors_round_trips_exactly() {
    let mut m = model("resnet20", 1);
    let prunable = m.prunable();
    let mut rng = Rng::new(5);
    for (j, &(i, k)) in prunable.iter().enumerate() {
        let t = &mut m.params[i][k];
        let mask: Vec<bool> = (0..t.data.len()).map(|_| rng.uniform() < 0.3).collect();
        t.state = match j % 3 {
            0 => WeightState::Dense,
            1 => WeightState::Masked { mask },
            _ => WeightState::Binary { mask, alpha: 0.05 },
        };
    }
    // Latent values include -0.0 and values at masked-out positions that the
    // file need not keep; effective weights must still match bit for bit.
    m.params[prunable[2].0][prunable[2].1].data[0] = -0.0;
    let card = card_of(m);
    let dir = tmp();
    let p = saved(dir.path(), "r20.card", &card);
    let back = Card::load(&p).expect("load");
    assert_same(&card, &back);
    // Binary tensors come back as ±1 where kept, 0 elsewhere.
    let (i, k) = prunable[2];
    let t = &back.model.params[i][k];
    let WeightState::Binary { mask, .. } = &t.state else {
        panic!("not binary")
    };
    for (v, m) in t.data.iter().zip(mask) {
        assert!(if *m { v.abs() == 1.0 } else { *v == 0.0 });
    }
    // Saving the loaded card gives the same bytes again.
    let p2 = saved(dir.path(), "again.card", &back);
    let (a, b) = (std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());
    assert_eq!(a, b);
}

#[test]
fn conv4_dense_round_trips_and_keeps_every_value() {
    let card = card_of(model("conv4", 2));
    let dir = tmp();
    let back = Card::load(&saved(dir.path(), "c4.card", &card)).expect("load");
    assert_same(&card, &back);
    assert_eq!(
        card.model, back.model,
        "dense tensors keep their exact data"
    );
}

#[test]
fn masked_and_binary_storage_is_much_smaller_than_dense() {
    let dir = tmp();
    let dense = saved(dir.path(), "dense.card", &card_of(model("resnet20", 1)));
    let mut m = model("resnet20", 1);
    mask_all(&mut m, 0.1, 9);
    let masked = saved(dir.path(), "masked.card", &card_of(m));
    let mut m = model("resnet20", 1);
    binarize_all(&mut m, 0.5, 9);
    let binary = saved(dir.path(), "binary.card", &card_of(m));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    let (d, s, b) = (size(&dense), size(&masked), size(&binary));
    // 90% sparse: 1 mask bit per weight + 10% of the values ≈ 13% of dense.
    assert!(s < 0.2 * d, "masked {s} vs dense {d}");
    // Binary: 1 mask bit + 1 sign bit per kept weight ≈ 5% of dense.
    assert!(b < 0.08 * d, "binary {b} vs dense {d}");
    assert!(d > 4.0 * 260_000.0, "dense stores f32 weights: {d}");
}

/// A 90 %-sparse binary tensor is stored as Rice codes (gaps between kept
/// weights and their signs): within 12 % of the information bound
/// `log2 C(n, k) + k` bits, about half of a mask bit per weight plus the
/// sign bits; it loads to the same weights and saves to the same bytes. A
/// half-kept one stays as mask and sign bits, which are smaller there.
#[test]
fn sparse_binary_tensors_are_stored_as_rice_codes() {
    let mut m = model("resnet20", 1);
    binarize_all(&mut m, 0.1, 17);
    let card = card_of(m);
    let stored = StoredModel::from_model(&card.model);
    let (mut bits, mut bound, mut layers, mut weights) = (0.0, 0.0, 0.0, 0.0);
    for (i, k) in card.model.prunable() {
        let t = &card.model.params[i][k];
        let st = &stored.params[i][k].data;
        assert!(
            matches!(st, StoredTensor::BinaryRice { .. }),
            "layer {i}: {}",
            st.format()
        );
        let n = t.data.len() as u64;
        let kept = t.mask().unwrap().iter().filter(|&&b| b).count() as u64;
        bound += cardc::rice::information_bound_bits(n, kept);
        bits += st.stored_bits(n as usize) as f64;
        layers += 1.0;
        weights += n as f64;
    }
    // Per tensor also the parameter, α and the last word's spare bits.
    assert!(
        bits <= 1.12 * bound + 72.0 * layers,
        "{bits} bits, bound {bound}"
    );
    // About 0.6 bits per weight (mask bit + sign bit of a kept one: 1.1).
    assert!(bits / weights < 0.66, "{} bits per weight", bits / weights);
    let dir = tmp();
    let p = saved(dir.path(), "rice.card", &card);
    let back = Card::load(&p).expect("load");
    assert_same(&card, &back);
    let p2 = saved(dir.path(), "again.card", &back);
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&p2).unwrap());

    let mut m = model("resnet20", 1);
    binarize_all(&mut m, 0.5, 18);
    let stored = StoredModel::from_model(&m);
    for (i, k) in m.prunable() {
        assert_eq!(stored.params[i][k].data.format(), "binary", "layer {i}");
    }
}

/// A Rice stream that is cut short or is not the one the encoder writes
/// for its pattern (another parameter, a spare word) is refused with a
/// message. (A flipped sign bit is another valid tensor, as in the plain
/// binary encoding: the card's checksum is what catches that.)
#[test]
fn damaged_rice_streams_are_refused() {
    let mut m = model("conv4", 3);
    binarize_all(&mut m, 0.08, 19);
    let stored = StoredModel::from_model(&m);
    let (i, k) = m.prunable()[1];
    let n = m.params[i][k].data.len();
    let oc = m.params[i][k].shape[0];
    let StoredTensor::BinaryRice {
        k: rk,
        words,
        alpha,
    } = stored.params[i][k].data.clone()
    else {
        panic!("not stored as Rice codes");
    };
    assert!(
        StoredTensor::BinaryRice {
            k: rk,
            words: words.clone(),
            alpha
        }
        .decode(n, oc)
        .is_ok()
    );
    let mut short = words.clone();
    short.truncate(words.len() / 2);
    let mut spare = words.clone();
    spare.push(0);
    for (what, k2, w) in [
        ("cut short", rk, short),
        ("spare word", rk, spare),
        ("other parameter", rk + 1, words.clone()),
    ] {
        let e = StoredTensor::BinaryRice {
            k: k2,
            words: w,
            alpha,
        }
        .decode(n, oc)
        .expect_err(what);
        assert!(e.contains("Rice-coded"), "{what}: {e}");
    }
}

// ---------------------------------------------------------------- refusals

#[test]
fn missing_and_empty_files_are_refused() {
    let dir = tmp();
    let p = dir.path().join("nothere.card");
    assert_err(Card::load(&p), &p, "cannot read");
    let p = dir.path().join("empty.card");
    std::fs::write(&p, b"").unwrap();
    assert_err(Card::load(&p), &p, "empty file");
}

#[test]
fn foreign_files_are_refused_as_bad_magic() {
    let dir = tmp();
    for (name, bytes) in [
        (
            "image.card",
            b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x20".to_vec(),
        ),
        ("notes.card", b"hello, this is a text file\n".to_vec()),
        ("short.card", b"PK".to_vec()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        assert_err(Card::load(&p), &p, "not a cardc file (bad magic)");
    }
}

#[test]
fn truncated_files_are_refused_at_every_cut() {
    let dir = tmp();
    let src = saved(dir.path(), "full.card", &card_of(model("conv4", 3)));
    let bytes = std::fs::read(&src).unwrap();
    let payload = (bytes.len() - HEADER_LEN) as u64;
    let p = dir.path().join("cut.card");
    for cut in [3, 8, 20, HEADER_LEN - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert_err(Card::load(&p), &p, "truncated (header needs 28 bytes");
    }
    for cut in [HEADER_LEN, HEADER_LEN + 1, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let have = (cut - HEADER_LEN) as u64;
        let needle = format!("truncated (header says {payload} payload bytes, file has {have})");
        assert_err(Card::load(&p), &p, &needle);
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    std::fs::write(&p, &longer).unwrap();
    assert_err(Card::load(&p), &p, "4 unexpected bytes after the payload");
}

#[test]
fn a_flipped_payload_bit_fails_the_checksum() {
    let dir = tmp();
    let p = saved(dir.path(), "flip.card", &card_of(model("conv4", 4)));
    let mut bytes = std::fs::read(&p).unwrap();
    for at in [HEADER_LEN, bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        std::fs::write(&p, &b).unwrap();
        assert_err(Card::load(&p), &p, "checksum mismatch (file damaged)");
    }
    bytes[25] ^= 1; // the stored CRC itself
    std::fs::write(&p, &bytes).unwrap();
    assert_err(Card::load(&p), &p, "checksum mismatch");
}

#[test]
fn future_and_zero_versions_are_refused() {
    let dir = tmp();
    let p = saved(dir.path(), "future.card", &card_of(model("conv4", 5)));
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let needle = format!("format version 9 is newer than this cardc supports ({FORMAT_VERSION})");
    assert_err(Card::load(&p), &p, &needle);
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    assert_err(Card::load(&p), &p, "format version 0");
}

#[test]
fn wrong_and_unknown_kinds_are_refused() {
    let dir = tmp();
    let p = dir.path().join("state.card");
    write_atomic(&p, Kind::Checkpoint, &vec![1.0f32, 2.0]).unwrap();
    assert_err(Card::load(&p), &p, "is a training checkpoint, not a card");
    let p = dir.path().join("ens.card");
    write_atomic(&p, Kind::Deck, &"deck").unwrap();
    assert_err(Card::load(&p), &p, "is a deck, not a card");
    assert_eq!(read_header(&p).unwrap().kind, Kind::Deck);
    let card = saved(dir.path(), "a.card", &card_of(model("conv4", 1)));
    assert_err(
        read::<String>(&card, Kind::Deck),
        &card,
        "is a card, not a deck",
    );
    let mut bytes = std::fs::read(&card).unwrap();
    bytes[12..16].copy_from_slice(&77u32.to_le_bytes());
    std::fs::write(&card, &bytes).unwrap();
    assert_err(Card::load(&card), &card, "unknown content kind 77");
}

/// A container with a hand-made payload and a correct checksum.
fn raw_container(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut b = b"CARDC\x00\x1a\n".to_vec();
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(kind as u32).to_le_bytes());
    b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

#[test]
fn undecodable_payloads_are_refused_without_huge_allocations() {
    let dir = tmp();
    let p = dir.path().join("lies.card");
    // A string length of ~2^60 bytes (varint marker 253 + u64), checksummed.
    let mut payload = vec![253u8];
    payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
    payload.extend_from_slice(b"abc");
    std::fs::write(&p, raw_container(Kind::Card, &payload)).unwrap();
    assert_err(Card::load(&p), &p, "payload does not decode");
    // A well-formed payload of the wrong type.
    write_atomic(&p, Kind::Card, &"just a string").unwrap();
    assert_err(Card::load(&p), &p, "payload does not decode");
    // Valid value followed by unread bytes.
    let mut payload = bincode::serde::encode_to_vec(7u32, bincode::config::standard()).unwrap();
    payload.push(0);
    std::fs::write(&p, raw_container(Kind::Checkpoint, &payload)).unwrap();
    assert_err(read::<u32>(&p, Kind::Checkpoint), &p, "1 bytes left over");
}

#[test]
fn random_damage_never_panics() {
    let dir = tmp();
    let p = saved(dir.path(), "fuzz.card", &card_of(model("resnet20", 6)));
    let bytes = std::fs::read(&p).unwrap();
    let mut rng = Rng::new(11);
    let q = dir.path().join("damaged.card");
    for _ in 0..200 {
        let mut b = bytes.clone();
        match rng.below(3) {
            0 => b.truncate(rng.below(b.len())),
            1 => {
                let at = rng.below(HEADER_LEN);
                b[at] = rng.next_u64() as u8;
            }
            _ => {
                let at = rng.below(b.len());
                b[at] ^= 1 << rng.below(8);
            }
        }
        if b == bytes {
            continue;
        }
        std::fs::write(&q, &b).unwrap();
        let e = Card::load(&q)
            .expect_err("damage must be noticed")
            .to_string();
        assert!(!e.contains('\n') && e.contains("damaged.card"), "{e}");
    }
}

/// Mirrors the card payload's layout so tests can write inconsistent cards
/// with valid envelopes (bincode is structural, not named).
#[derive(Serialize, Deserialize)]
struct RawCard {
    model: StoredModel,
    normalization: Normalization,
    class_names: Vec<String>,
    provenance: Provenance,
    metrics: BTreeMap<String, f64>,
}

fn raw_of(card: &Card) -> RawCard {
    RawCard {
        model: StoredModel::from_model(&card.model),
        normalization: card.normalization.clone(),
        class_names: card.class_names.clone(),
        provenance: card.provenance.clone(),
        metrics: card.metrics.clone(),
    }
}

#[test]
fn inconsistent_contents_are_refused_after_decoding() {
    let dir = tmp();
    let card = card_of(model("resnet20", 7));
    let p = dir.path().join("bad.card");

    let mut raw = raw_of(&card);
    raw.class_names.truncate(3);
    write_atomic(&p, Kind::Card, &raw).unwrap();
    assert_err(
        Card::load(&p),
        &p,
        "invalid card: 3 class names for a model with 10 outputs",
    );

    let mut raw = raw_of(&card);
    raw.normalization.mean.pop();
    write_atomic(&p, Kind::Card, &raw).unwrap();
    assert_err(Card::load(&p), &p, "normalization has 2 means");

    let mut raw = raw_of(&card);
    raw.model.params[1][0].data = StoredTensor::Masked {
        mask: vec![0xff; 3],
        values: vec![1.0; 24],
    };
    write_atomic(&p, Kind::Card, &raw).unwrap();
    assert_err(Card::load(&p), &p, "invalid card: layer");

    let mut raw = raw_of(&card);
    raw.model.params[1].pop();
    write_atomic(&p, Kind::Card, &raw).unwrap();
    assert_err(Card::load(&p), &p, "invalid card");

    let mut raw = raw_of(&card);
    raw.model.params[1][0].shape = vec![usize::MAX, 2];
    write_atomic(&p, Kind::Card, &raw).unwrap();
    assert_err(Card::load(&p), &p, "too large");

    let mut bad = card.clone();
    bad.class_names.clear();
    let q = dir.path().join("never.card");
    assert_err(bad.save(&q), &q, "invalid card");
    assert!(!q.exists());
}

// ---------------------------------------------------------------- atomic writes

/// A value whose serialization fails halfway.
struct Unserializable;
impl Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses\nto serialize"))
    }
}

#[test]
fn write_atomic_leaves_no_temp_files_and_never_clobbers_on_failure() {
    let dir = tmp();
    let p = dir.path().join("state.ckpt");
    write_atomic(&p, Kind::Checkpoint, &vec![1u32, 2, 3]).unwrap();
    write_atomic(&p, Kind::Checkpoint, &vec![4u32, 5]).unwrap();
    assert_eq!(names_in(dir.path()), vec!["state.ckpt"]);
    assert_eq!(read::<Vec<u32>>(&p, Kind::Checkpoint).unwrap(), vec![4, 5]);

    // Serialization fails: the old file stays, nothing else appears.
    assert_err(
        write_atomic(&p, Kind::Checkpoint, &Unserializable),
        &p,
        "cannot encode",
    );
    assert_eq!(read::<Vec<u32>>(&p, Kind::Checkpoint).unwrap(), vec![4, 5]);
    assert_eq!(names_in(dir.path()), vec!["state.ckpt"]);

    // The rename fails (a directory is in the way): the temp file is removed.
    let blocked = dir.path().join("blocked.card");
    std::fs::create_dir(&blocked).unwrap();
    assert_err(
        write_atomic(&blocked, Kind::Card, &1u8),
        &blocked,
        "cannot write",
    );
    assert_eq!(names_in(dir.path()), vec!["blocked.card", "state.ckpt"]);

    // The directory does not exist.
    let nowhere = dir.path().join("no/such/dir/x.card");
    assert_err(
        write_atomic(&nowhere, Kind::Card, &1u8),
        &nowhere,
        "cannot write",
    );
}

// ---------------------------------------------------------------- quantized storage

#[test]
fn f16_storage_decodes_to_f32() {
    let values = [0.5f32, -2.0, 1.25, 0.0, -0.0, 65504.0, 3.0e-5, 1.0 / 3.0];
    let st = StoredTensor::encode_f16(&values, None);
    let (data, state) = st.decode(values.len(), 2).unwrap();
    assert_eq!(state, WeightState::Dense);
    for (a, b) in values.iter().zip(&data) {
        assert_eq!(half::f16::from_f32(*a).to_f32().to_bits(), b.to_bits());
    }
    assert_eq!(
        bits(&data[..6]),
        bits(&values[..6]),
        "representable values are exact"
    );
    let mask = [true, false, true, true, false, true, false, false];
    let st = StoredTensor::encode_f16(&values, Some(&mask));
    let (data, state) = st.decode(8, 1).unwrap();
    assert_eq!(
        state,
        WeightState::Masked {
            mask: mask.to_vec()
        }
    );
    assert_eq!(data, vec![0.5, 0.0, 1.25, 0.0, 0.0, 65504.0, 0.0, 0.0]);
    assert_eq!(st.stored_bits(8), 8 + 16 * 4);
}

#[test]
fn int8_storage_decodes_with_per_channel_scales() {
    let mut rng = Rng::new(2);
    let (oc, per) = (4, 18);
    let values: Vec<f32> = (0..oc * per)
        .map(|i| rng.normal() * (1 + i / per) as f32)
        .collect();
    let st = StoredTensor::encode_int8(&values, oc, None).unwrap();
    let StoredTensor::Int8 { scales, .. } = &st else {
        panic!()
    };
    let scales = scales.clone();
    let (data, state) = st.decode(oc * per, oc).unwrap();
    assert_eq!(state, WeightState::Dense);
    for (i, (a, b)) in values.iter().zip(&data).enumerate() {
        assert!(
            (a - b).abs() <= scales[i / per] * 0.5 + 1e-6,
            "{i}: {a} vs {b}"
        );
    }
    assert_eq!(st.stored_bits(oc * per), 8 * 72 + 32 * 4);
    // Masked int8 keeps zeros and the mask.
    let mask: Vec<bool> = (0..oc * per).map(|i| i % 3 == 0).collect();
    let st = StoredTensor::encode_int8(&values, oc, Some(&mask)).unwrap();
    let (data, state) = st.decode(oc * per, oc).unwrap();
    assert_eq!(state, WeightState::Masked { mask: mask.clone() });
    assert!(data.iter().zip(&mask).all(|(v, m)| *m || *v == 0.0));
    assert!(StoredTensor::encode_int8(&values, 5, None).is_err());
    assert!(
        st.decode(oc * per, 3).is_err(),
        "scale count must match channels"
    );
}

#[test]
fn cards_with_quantized_tensors_load_as_f32() {
    let dir = tmp();
    let card = card_of(model("conv4", 8));
    let mut raw = raw_of(&card);
    let (i, k) = card.model.prunable()[0];
    let t = &card.model.params[i][k];
    raw.model.params[i][k].data = StoredTensor::encode_int8(&t.data, t.shape[0], None).unwrap();
    let (i2, k2) = card.model.prunable()[1];
    let t2 = &card.model.params[i2][k2];
    raw.model.params[i2][k2].data = StoredTensor::encode_f16(&t2.data, None);
    let p = dir.path().join("q.card");
    write_atomic(&p, Kind::Card, &raw).unwrap();
    let back = Card::load(&p).expect("load");
    let expect = raw.model.params[i][k]
        .data
        .decode(t.data.len(), t.shape[0])
        .unwrap()
        .0;
    assert_eq!(bits(&back.model.params[i][k].data), bits(&expect));
    let got = &back.model.params[i2][k2].data;
    assert!(
        got.iter()
            .zip(&t2.data)
            .all(|(a, b)| (a - b).abs() <= b.abs() * 1e-3 + 1e-7)
    );
}

// ---------------------------------------------------------------- info

#[test]
fn summary_counts_resnet20() {
    let card = card_of(model("resnet20", 1));
    let s = summary(&card);
    let params = s["params"].as_u64().unwrap();
    assert!((265_000..=275_000).contains(&params), "params {params}");
    assert_eq!(s["sparsity"].as_f64(), Some(0.0));
    assert_eq!(s["classes"].as_u64(), Some(10));
    assert_eq!(s["arch"], "resnet20");
    assert_eq!(s["bytes"], s["dense_f32_bytes"], "dense card stores f32");
    assert!((40_700_000..=40_900_000).contains(&s["macs"].as_u64().unwrap()));
    let layers = s["layers"].as_array().unwrap();
    assert_eq!(layers.len(), card.model.graph.nodes.len());
    let lp: u64 = layers.iter().map(|l| l["params"].as_u64().unwrap()).sum();
    assert_eq!(lp, params);
    for l in layers {
        for key in ["name", "op", "shape", "params", "sparsity", "bits", "bytes"] {
            assert!(l.get(key).is_some(), "layer lacks {key}: {l}");
        }
    }
    assert_eq!(s["metrics"]["accuracy"].as_f64(), Some(0.8125));
    assert_eq!(s["provenance"]["method"], "gmp");
}

#[test]
fn summary_reports_a_known_mask() {
    let mut m = model("conv4", 1);
    let (i, k) = m.prunable()[1];
    let name = m.graph.nodes[i].name.clone();
    let n = m.params[i][k].data.len();
    // Keep exactly one weight in four.
    let mask: Vec<bool> = (0..n).map(|j| j % 4 == 0).collect();
    let kept = mask.iter().filter(|&&b| b).count();
    m.params[i][k].state = WeightState::Masked { mask };
    let total: usize = m
        .prunable()
        .iter()
        .map(|&(i, k)| m.params[i][k].data.len())
        .sum();
    let card = card_of(m);
    let s = summary(&card);
    let layer = s["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name.as_str())
        .unwrap()
        .clone();
    assert_eq!(layer["op"], "Conv2d");
    assert_eq!(layer["format"], "masked");
    assert!((layer["sparsity"].as_f64().unwrap() - 0.75).abs() < 1e-12);
    let want_bits = (32 * kept + n) as f64 / n as f64;
    assert!((layer["bits"].as_f64().unwrap() - want_bits).abs() < 1e-9);
    assert_eq!(
        layer["bytes"].as_u64().unwrap(),
        (n.div_ceil(8) + 4 * kept) as u64
    );
    let want = (n - kept) as f64 / total as f64;
    assert!((s["sparsity"].as_f64().unwrap() - want).abs() < 1e-12);
    assert!(s["bytes"].as_u64() < s["dense_f32_bytes"].as_u64());
    // The conv/linear share: the layer rows of those ops, nothing else.
    let layers = s["layers"].as_array().unwrap();
    let sum = |key: &str| -> u64 {
        layers
            .iter()
            .filter(|l| l["op"] == "Conv2d" || l["op"] == "Linear")
            .map(|l| l[key].as_u64().unwrap())
            .sum()
    };
    assert_eq!(s["conv_linear_bytes"].as_u64().unwrap(), sum("bytes"));
    assert_eq!(
        s["conv_linear_dense_f32_bytes"].as_u64().unwrap(),
        sum("dense_f32_bytes")
    );
    assert!(s["conv_linear_bytes"].as_u64() < s["bytes"].as_u64());

    let text = summary_text(&card);
    assert!(text.contains("conv/linear layers: "), "{text}");
    assert!(text.contains(&name) && text.contains("75.0%") && text.contains("total"));
    assert!(text.contains("stored vs") && text.contains("method: gmp"));
    assert!(text.contains("accuracy: 0.8125"));
}

#[test]
fn summary_prices_binary_weights() {
    let mut m = model("conv4", 1);
    binarize_all(&mut m, 1.0, 1);
    let (i, _) = m.prunable()[0];
    let n = m.params[i][0].data.len();
    let s = summary(&card_of(m));
    let l = &s["layers"][i];
    assert_eq!(l["format"], "binary");
    assert!((l["bits"].as_f64().unwrap() - (2 * n + 32) as f64 / n as f64).abs() < 1e-9);
}
