//! Augmentations: each AugMix operation on hand-made images (PIL
//! semantics), AugMix's range, determinism and effect, Gaussian noise
//! statistics, `--augment` parsing, and flip+crop as the base of both.

use cardc::data::Augment;
use cardc::data::augmix::{
    Op, affine, augmix, autocontrast, equalize, posterize, rotate, solarize, translate,
};
use cardc::rng::Rng;

/// A c×h×w image with value f(channel, y, x).
fn image(c: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize) -> u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                v.push(f(ch, y, x));
            }
        }
    }
    v
}

fn noise_image(c: usize, h: usize, w: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..c * h * w).map(|_| rng.below(256) as u8).collect()
}

#[test]
fn solarize_inverts_at_and_above_the_threshold() {
    let img: Vec<u8> = (0..=255).collect();
    let out = solarize(&img, 128);
    for (i, &v) in out.iter().enumerate() {
        let want = if i < 128 { i as u8 } else { 255 - i as u8 };
        assert_eq!(v, want, "value {i}");
    }
    assert_eq!(solarize(&img, 256), img, "threshold 256 changes nothing");
}

#[test]
fn posterize_keeps_the_top_bits() {
    let img: Vec<u8> = vec![0, 15, 16, 100, 255];
    assert_eq!(posterize(&img, 4), vec![0, 0, 16, 96, 240]);
    assert_eq!(posterize(&img, 3), vec![0, 0, 0, 96, 224]);
    assert_eq!(posterize(&img, 8), img);
}

#[test]
fn autocontrast_stretches_each_channel_to_full_range() {
    // Channel 0 spans 50..=150, channel 1 is constant (left alone).
    let img = image(
        2,
        1,
        3,
        |c, _, x| if c == 0 { [50, 100, 150][x] } else { 77 },
    );
    let out = autocontrast(&img, 2, 1, 3);
    // PIL: lut[i] = int((i - 50) * 255 / 100), truncated.
    assert_eq!(&out[..3], &[0, 127, 255]);
    assert_eq!(&out[3..], &[77, 77, 77]);
}

#[test]
fn equalize_spreads_the_histogram_like_pil() {
    // Four values, 4 pixels each: PIL's rule gives step = (16 - 4) / 255 = 0
    // (unchanged); with 256 pixels per value the levels spread evenly.
    let small = image(1, 4, 4, |_, y, _| [10, 20, 30, 40][y]);
    assert_eq!(equalize(&small, 1, 4, 4), small);
    let img = image(1, 32, 32, |_, y, _| [10, 20, 30, 40][y / 8]);
    let out = equalize(&img, 1, 32, 32);
    // step = (1024 - 256) / 255 = 3; lut[v] = (1 + pixels below v) / 3.
    let want = |v: u8| match v {
        10 => 0,
        20 => (1 + 256) / 3,
        30 => (1 + 512) / 3,
        _ => 255, // (1 + 768) / 3 = 256, capped
    };
    for (a, b) in img.iter().zip(&out) {
        assert_eq!(*b as usize, want(*a).min(255), "value {a}");
    }
}

#[test]
fn translate_shifts_by_whole_pixels_with_black_fill() {
    let img = image(3, 5, 6, |c, y, x| (1 + c * 60 + y * 6 + x) as u8);
    let out = translate(&img, 3, 5, 6, 2, 0);
    for c in 0..3 {
        for y in 0..5 {
            for x in 0..6 {
                let want = if x + 2 < 6 {
                    img[(c * 5 + y) * 6 + x + 2]
                } else {
                    0
                };
                assert_eq!(out[(c * 5 + y) * 6 + x], want, "({c},{y},{x})");
            }
        }
    }
    let down = translate(&img, 3, 5, 6, 0, -1);
    assert!(down[..6].iter().all(|&v| v == 0), "first row filled black");
    assert_eq!(&down[6..12], &img[..6]);
}

#[test]
fn rotate_and_shear_keep_the_centre_and_fill_corners() {
    let img = vec![200u8; 16 * 16];
    // 45°: the corners come from outside the image (black); the middle stays.
    let r = rotate(&img, 1, 16, 16, 45.0);
    assert_eq!(r[0], 0);
    assert_eq!(r[8 * 16 + 8], 200);
    // Zero rotation and identity affine are exact copies.
    assert_eq!(rotate(&img, 1, 16, 16, 0.0), img);
    let id = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    let n = noise_image(2, 7, 9, 3);
    assert_eq!(affine(&n, 2, 7, 9, id), n);
    // Shear x by 0.25 moves the bottom rows' content sideways.
    let sheared = affine(&img, 1, 16, 16, [1.0, 0.25, 0.0, 0.0, 1.0, 0.0]);
    assert_eq!(sheared[15 * 16 + 15], 0, "bottom right reads past the edge");
    assert_eq!(sheared[0], 200, "top left stays inside");
    // Rotating by 90° twice equals 180°, which maps (y, x) to (h-1-y, w-1-x).
    let half = rotate(&n[..63], 1, 7, 9, 180.0);
    for y in 0..7 {
        for x in 0..9 {
            assert_eq!(half[y * 9 + x], n[(6 - y) * 9 + 8 - x], "({y},{x})");
        }
    }
}

#[test]
fn every_op_keeps_size_and_is_deterministic() {
    let img = noise_image(3, 12, 10, 1);
    for op in Op::ALL {
        let a = op.apply(&img, 3, 12, 10, 3.0, &mut Rng::new(5));
        let b = op.apply(&img, 3, 12, 10, 3.0, &mut Rng::new(5));
        assert_eq!(a.len(), img.len(), "{op:?}");
        assert_eq!(a, b, "{op:?}");
    }
}

#[test]
fn augmix_is_in_range_deterministic_and_changes_the_image() {
    for (c, h, w) in [(3, 32, 32), (1, 9, 13)] {
        let img = image(c, h, w, |ch, y, x| ((ch * 40 + y * 7 + x * 3) % 256) as u8);
        let a = augmix(&img, c, h, w, &mut Rng::new(11));
        let b = augmix(&img, c, h, w, &mut Rng::new(11));
        assert_eq!(a, b);
        assert_eq!(a.len(), img.len());
        let changed = (0..20)
            .filter(|&s| augmix(&img, c, h, w, &mut Rng::new(s)) != img)
            .count();
        assert!(
            changed >= 15,
            "only {changed} of 20 draws changed the image"
        );
        let other = augmix(&img, c, h, w, &mut Rng::new(12));
        assert_ne!(a, other);
    }
}

#[test]
fn augmix_augment_is_flipcrop_then_augmix() {
    let img = noise_image(3, 8, 8, 2);
    let got = Augment::AugMix.apply(&img, 3, 8, 8, &mut Rng::new(4));
    let mut rng = Rng::new(4);
    let base = Augment::FlipCrop { pad: 4 }.apply(&img, 3, 8, 8, &mut rng);
    assert_eq!(got, augmix(&base, 3, 8, 8, &mut rng));
}

#[test]
fn gaussian_noise_has_the_requested_statistics() {
    // Mid-grey so clipping is rare at σ = 0.05; pad 0 via flip of a
    // constant image is the identity, so only the noise remains.
    let img = vec![128u8; 3 * 32 * 32];
    let aug = Augment::Gaussian {
        sigma: 0.05,
        p: 1.0,
    };
    let mut diffs = Vec::new();
    for seed in 0..40 {
        let out = aug.apply(&img, 3, 32, 32, &mut Rng::new(seed));
        // Crop padding blacks out edges: use the central 24×24.
        for ch in 0..3 {
            for y in 4..28 {
                for x in 4..28 {
                    let v = out[(ch * 32 + y) * 32 + x] as f64 / 255.0;
                    diffs.push(v - 128.0 / 255.0);
                }
            }
        }
    }
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.003, "mean {mean}");
    // Rounding to bytes adds variance 1/(12·255²).
    let want = (0.05f64.powi(2) + 1.0 / (12.0 * 255.0 * 255.0)).sqrt();
    assert!((sd - want).abs() < 0.002, "sd {sd} want {want}");

    // p = 0.3: about 30 % of images are noised, the rest only cropped.
    let aug = Augment::Gaussian { sigma: 0.1, p: 0.3 };
    let plain = Augment::FlipCrop { pad: 4 };
    let noised = (0..400)
        .filter(|&s| {
            aug.apply(&img, 3, 32, 32, &mut Rng::new(s))
                != plain.apply(&img, 3, 32, 32, &mut Rng::new(s))
        })
        .count();
    assert!((90..=150).contains(&noised), "{noised} of 400 noised");

    // Clipping: σ large on a white image never leaves [0, 255] and darkens.
    let white = vec![255u8; 64];
    let out = Augment::Gaussian { sigma: 0.5, p: 1.0 }.apply(&white, 1, 8, 8, &mut Rng::new(1));
    assert!(out.iter().any(|&v| v < 255));
}

#[test]
fn parse_and_display_round_trip() {
    for (s, want) in [
        ("augmix", Augment::AugMix),
        ("gaussian", Augment::Gaussian { sigma: 0.1, p: 0.5 }),
        (
            "gaussian:0.08",
            Augment::Gaussian {
                sigma: 0.08,
                p: 0.5,
            },
        ),
        ("gaussian:0.2:1", Augment::Gaussian { sigma: 0.2, p: 1.0 }),
    ] {
        let got = Augment::parse(s).unwrap();
        assert_eq!(got, want, "{s}");
        assert_eq!(Augment::parse(&got.to_string()).unwrap(), got);
    }
    for bad in [
        "gaussian:x",
        "gaussian:0.1:2",
        "gaussian:-1",
        "gaussian:0.1:0.5:3",
        "augmax",
    ] {
        let e = Augment::parse(bad).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

#[test]
fn augmix_views_batch_stacks_clean_then_two_chains() {
    let ds = cardc::data::synthetic::generate(6, cardc::data::Split::Train);
    let norm = cardc::data::Normalization::from_dataset(&ds);
    let idx = [0usize, 3, 5];
    let (x, y) = cardc::data::loader::make_augmix_views_batch(&ds, &idx, &norm, 9);
    assert_eq!(x.shape, [9, 3, 32, 32]);
    assert_eq!(y, idx.iter().map(|&i| ds.labels[i]).collect::<Vec<_>>());
    let n = 3 * 32 * 32;
    let view = |v: usize, i: usize| &x.data[(v * 3 + i) * n..(v * 3 + i + 1) * n];
    for i in 0..3 {
        assert_ne!(
            view(1, i),
            view(2, i),
            "image {i}: the two chains are independent"
        );
        assert_ne!(view(0, i), view(1, i), "image {i}: AugMix changed the view");
    }
    let (again, _) = cardc::data::loader::make_augmix_views_batch(&ds, &idx, &norm, 9);
    assert_eq!(again.data, x.data, "deterministic for a seed");
}

#[test]
fn jsd_training_runs_and_needs_augmix() {
    use crate::common::{assert_clean_error, cardc, json};
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("jsd.card");
    let args = |augment: &'static str| {
        vec![
            "train".to_string(),
            "--arch".into(),
            "conv4".into(),
            "--width-mult".into(),
            "0.25".into(),
            "--data".into(),
            "synthetic:96".into(),
            "--epochs".into(),
            "1".into(),
            "--batch".into(),
            "16".into(),
            "--augment".into(),
            augment.into(),
            "--jsd".into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--json".into(),
        ]
    };
    let a = args("augmix");
    let rep = json(&cardc(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(rep["history"][0]["loss"].as_f64().unwrap().is_finite());
    let card = cardc::card::Card::load(&out).unwrap();
    assert!(
        card.provenance.notes.iter().any(|n| n.contains("jsd λ=12")),
        "{:?}",
        card.provenance.notes
    );
    std::fs::remove_file(&out).unwrap();
    let a = args("flipcrop");
    assert_clean_error(
        &cardc(&a.iter().map(String::as_str).collect::<Vec<_>>()),
        "--jsd is AugMix's consistency loss",
    );
    assert!(!out.exists());
}
