//! Tests of `cardc::data` on small data made in temp dirs in the real
//! formats, so they pass without /work/shared.

use cardc::data::{
    Augment, BatchIter, DataSpec, Dataset, Normalization, Split, epoch_order, load, make_batch,
    write_cifar10_bin, write_cifar10_dir, write_imagefolder,
};
use std::path::Path;

/// A small dataset whose bytes encode the image index, so tests can tell
/// images apart after subsets and shuffles.
fn tiny(n: usize, c: usize, h: usize, w: usize, classes: usize) -> Dataset {
    let len = c * h * w;
    let mut images = vec![0u8; n * len];
    for i in 0..n {
        for j in 0..len {
            images[i * len + j] = ((i * 31 + j * 7) % 251) as u8;
        }
        images[i * len] = (i % 256) as u8;
        if len > 1 {
            images[i * len + 1] = (i / 256) as u8;
        }
    }
    Dataset {
        images,
        labels: (0..n).map(|i| (i % classes) as u32).collect(),
        channels: c,
        height: h,
        width: w,
        class_names: (0..classes).map(|k| format!("class{k}")).collect(),
        source: "tiny".into(),
    }
}

fn index_of(img: &[u8]) -> usize {
    img[0] as usize + 256 * img[1] as usize
}

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

// ---------------------------------------------------------------- spec

#[test]
fn spec_parses_accepted_forms_and_round_trips() {
    let cases = [
        ("cifar10:/data/c10", DataSpec::Cifar10("/data/c10".into())),
        ("imagefolder:imgs", DataSpec::ImageFolder("imgs".into())),
        ("synthetic", DataSpec::Synthetic(5000)),
        ("synthetic:300", DataSpec::Synthetic(300)),
    ];
    for (s, want) in cases {
        let got = DataSpec::parse(s).unwrap();
        assert_eq!(got, want, "{s}");
        assert_eq!(DataSpec::parse(&got.to_string()).unwrap(), want);
    }
    assert_eq!(DataSpec::Synthetic(5000).to_string(), "synthetic:5000");
    assert_eq!(
        DataSpec::parse("cifar10:C:/x").unwrap(),
        DataSpec::Cifar10("C:/x".into())
    );
}

#[test]
fn spec_errors_name_the_argument_and_list_forms() {
    for bad in [
        "mnist:/x",
        "cifar10",
        "cifar10:",
        "synthetic:many",
        "synthetic:0",
        "",
    ] {
        let e = err_text(DataSpec::parse(bad));
        assert!(e.contains(&format!("{bad:?}")), "{e}");
        assert!(
            e.contains("cifar10:DIR") && e.contains("synthetic:N"),
            "{e}"
        );
    }
}

// ---------------------------------------------------------------- cifar10

#[test]
fn cifar10_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let train = tiny(25, 3, 32, 32, 10);
    let test = tiny(7, 3, 32, 32, 10);
    write_cifar10_dir(dir.path(), &train, &test).unwrap();
    let spec = DataSpec::Cifar10(dir.path().to_path_buf());
    let tr = load(&spec, Split::Train).unwrap();
    let te = load(&spec, Split::Test).unwrap();
    assert_eq!(tr.images, train.images);
    assert_eq!(tr.labels, train.labels);
    assert_eq!(tr.class_names, train.class_names);
    assert_eq!((tr.channels, tr.height, tr.width), (3, 32, 32));
    assert_eq!(tr.digest(), train.digest());
    assert_eq!(te.len(), 7);
    assert_eq!(te.images, test.images);
    assert!(tr.source.contains("train") && te.source.contains("test"));
}

#[test]
fn cifar10_reads_batches_in_numeric_order_and_defaults_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let all = tiny(30, 3, 32, 32, 10);
    let parts: Vec<Dataset> = (0..3)
        .map(|k| all.subset(&(k * 10..k * 10 + 10).collect::<Vec<_>>()))
        .collect();
    // data_batch_10 must come after data_batch_2 (numeric, not string, order).
    write_cifar10_bin(&dir.path().join("data_batch_1.bin"), &parts[0]).unwrap();
    write_cifar10_bin(&dir.path().join("data_batch_2.bin"), &parts[1]).unwrap();
    write_cifar10_bin(&dir.path().join("data_batch_10.bin"), &parts[2]).unwrap();
    let tr = load(&DataSpec::Cifar10(dir.path().into()), Split::Train).unwrap();
    assert_eq!(tr.images, all.images);
    assert_eq!(tr.class_names.len(), 10);
    assert_eq!(tr.class_names[0], "airplane");
    assert_eq!(tr.class_names[9], "truck");
}

#[test]
fn cifar10_errors_name_file_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DataSpec::Cifar10(dir.path().into());
    let f = dir.path().join("data_batch_1.bin");

    // No batches at all.
    let e = err_text(load(&spec, Split::Train));
    assert!(
        e.contains("data_batch_") && e.contains(&dir.path().display().to_string()),
        "{e}"
    );
    let e = err_text(load(&spec, Split::Test));
    assert!(
        e.contains("test_batch.bin") && e.contains("does not exist"),
        "{e}"
    );

    std::fs::write(&f, []).unwrap();
    let e = err_text(load(&spec, Split::Train));
    assert!(e.contains("data_batch_1.bin") && e.contains("empty"), "{e}");

    std::fs::write(&f, vec![0u8; 3073 + 5]).unwrap();
    let e = err_text(load(&spec, Split::Train));
    assert!(
        e.contains("data_batch_1.bin") && e.contains("3078") && e.contains("multiple of"),
        "{e}"
    );

    let mut rec = vec![0u8; 2 * 3073];
    rec[3073] = 12;
    std::fs::write(&f, &rec).unwrap();
    let e = err_text(load(&spec, Split::Train));
    assert!(
        e.contains("data_batch_1.bin") && e.contains("record 1") && e.contains("label 12"),
        "{e}"
    );

    // A meta file with 3 classes makes label 5 invalid.
    rec[3073] = 5;
    std::fs::write(&f, &rec).unwrap();
    std::fs::write(dir.path().join("batches.meta.txt"), "a\n\nb\nc\n").unwrap();
    let e = err_text(load(&spec, Split::Train));
    assert!(e.contains("label 5") && e.contains("3 classes"), "{e}");
    rec[3073] = 2;
    std::fs::write(&f, &rec).unwrap();
    let ok = load(&spec, Split::Train).unwrap();
    assert_eq!(ok.class_names, ["a", "b", "c"]);
    assert_eq!(ok.labels, [0, 2]);

    let missing = dir.path().join("nope");
    let e = err_text(load(&DataSpec::Cifar10(missing.clone()), Split::Train));
    assert!(
        e.contains(&missing.display().to_string()) && e.contains("does not exist"),
        "{e}"
    );
}

#[test]
fn write_cifar10_rejects_other_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_text(write_cifar10_bin(
        &dir.path().join("x.bin"),
        &tiny(2, 1, 32, 32, 2),
    ));
    assert!(e.contains("x.bin") && e.contains("3x32x32"), "{e}");
}

#[test]
fn real_cifar10_loads_if_present() {
    let dir = Path::new("/work/shared/data/cifar10");
    if !dir.join("test_batch.bin").exists() {
        println!("skipped: {} not present", dir.display());
        return;
    }
    let spec = DataSpec::Cifar10(dir.into());
    let tr = load(&spec, Split::Train).unwrap();
    let te = load(&spec, Split::Test).unwrap();
    assert_eq!((tr.len(), te.len()), (50_000, 10_000));
    assert!(tr.labels.iter().chain(&te.labels).all(|&l| l < 10));
    assert_eq!(tr.class_names.len(), 10);
    assert!(
        tr.class_counts().iter().all(|&c| c == 5000),
        "{:?}",
        tr.class_counts()
    );
}

// ---------------------------------------------------------------- imagefolder

/// Writes an RGB image of `w`x`h` filled with `rgb` to `path` (format from
/// the extension).
fn save_rgb(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

#[test]
fn imagefolder_reads_png_and_jpeg_with_sorted_classes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    save_rgb(&d.join("zebra/a.png"), 8, 6, [10, 20, 30]);
    save_rgb(&d.join("apple/b.JPG"), 8, 6, [200, 100, 50]);
    save_rgb(&d.join("apple/a.jpeg"), 8, 6, [0, 255, 0]);
    std::fs::write(d.join("apple/notes.txt"), "ignored").unwrap();
    let spec = DataSpec::ImageFolder(d.into());
    let ds = load(&spec, Split::Train).unwrap();
    assert_eq!(ds.class_names, ["apple", "zebra"]);
    assert_eq!(ds.labels, [0, 0, 1]);
    assert_eq!((ds.channels, ds.height, ds.width), (3, 6, 8));
    // PNG is lossless: CHW planes of the fill colour.
    let png = ds.image(2);
    assert!(png[..48].iter().all(|&b| b == 10));
    assert!(png[48..96].iter().all(|&b| b == 20));
    assert!(png[96..].iter().all(|&b| b == 30));
    // JPEG is lossy: close to the fill colour.
    let jpg = ds.image(1);
    assert!(
        (jpg[0] as i32 - 200).abs() < 8 && (jpg[48] as i32 - 100).abs() < 8,
        "{jpg:?}"
    );
    // Without train/test folders the test split is the same images.
    let te = load(&spec, Split::Test).unwrap();
    assert_eq!(te.images, ds.images);
    assert!(
        te.source.contains("same") || te.source.contains("training images"),
        "{}",
        te.source
    );
}

#[test]
fn imagefolder_round_trip_with_train_test_layout() {
    let dir = tempfile::tempdir().unwrap();
    let train = tiny(12, 3, 5, 7, 3);
    let test = tiny(4, 3, 5, 7, 3);
    write_imagefolder(&dir.path().join("train"), &train).unwrap();
    write_imagefolder(&dir.path().join("test"), &test).unwrap();
    let spec = DataSpec::ImageFolder(dir.path().into());
    let tr = load(&spec, Split::Train).unwrap();
    let te = load(&spec, Split::Test).unwrap();
    assert_eq!(tr.class_names, train.class_names);
    assert_eq!(tr.len(), 12);
    assert_eq!(te.len(), 4);
    // Same multiset of (label, image); order is class by class.
    let key = |ds: &Dataset| {
        let mut v: Vec<(u32, Vec<u8>)> = (0..ds.len())
            .map(|i| (ds.labels[i], ds.image(i).to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(key(&tr), key(&train));
    assert_eq!(key(&te), key(&test));
}

#[test]
fn imagefolder_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = DataSpec::ImageFolder(d.into());

    let e = err_text(load(&spec, Split::Train));
    assert!(e.contains("no class folders"), "{e}");

    save_rgb(&d.join("cat/1.png"), 4, 4, [1, 2, 3]);
    std::fs::create_dir_all(d.join("dog")).unwrap();
    std::fs::write(d.join("dog/readme.txt"), "x").unwrap();
    let e = err_text(load(&spec, Split::Train));
    assert!(e.contains("dog") && e.contains("no .png"), "{e}");

    std::fs::write(d.join("dog/broken.png"), b"this is not a png").unwrap();
    let e = err_text(load(&spec, Split::Train));
    assert!(e.contains("broken.png"), "{e}");
    std::fs::remove_file(d.join("dog/broken.png")).unwrap();

    save_rgb(&d.join("dog/big.png"), 5, 4, [0, 0, 0]);
    let e = err_text(load(&spec, Split::Train));
    assert!(
        e.contains("big.png") && e.contains("5x4") && e.contains("4x4"),
        "{e}"
    );

    let missing = d.join("missing");
    let e = err_text(load(&DataSpec::ImageFolder(missing.clone()), Split::Train));
    assert!(e.contains(&missing.display().to_string()), "{e}");
}

// ---------------------------------------------------------------- synthetic

#[test]
fn synthetic_is_deterministic_balanced_and_varied() {
    let spec = DataSpec::Synthetic(400);
    let a = load(&spec, Split::Train).unwrap();
    let b = load(&spec, Split::Train).unwrap();
    let t = load(&spec, Split::Test).unwrap();
    assert_eq!(a.digest(), b.digest());
    assert_eq!(a.images, b.images);
    assert_eq!((a.len(), t.len()), (400, 80));
    assert_ne!(a.image(0), t.image(0));
    assert_ne!(a.digest(), t.digest());
    assert_eq!((a.channels, a.height, a.width), (3, 32, 32));
    assert_eq!(a.class_names.len(), 10);
    assert!(
        a.class_counts().iter().all(|&c| c == 40),
        "{:?}",
        a.class_counts()
    );
    assert!(
        t.class_counts().iter().all(|&c| c == 8),
        "{:?}",
        t.class_counts()
    );
    let norm = Normalization::from_dataset(&a);
    for c in 0..3 {
        assert!((0.3..0.7).contains(&norm.mean[c]), "{norm:?}");
        assert!((0.15..0.45).contains(&norm.std[c]), "{norm:?}");
    }
    // No two images alike.
    let mut seen: Vec<&[u8]> = (0..a.len()).map(|i| a.image(i)).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), a.len());
}

// ---------------------------------------------------------------- dataset helpers

#[test]
fn subset_limit_and_digest() {
    let ds = tiny(10, 3, 2, 2, 3);
    let s = ds.subset(&[4, 1, 4]);
    assert_eq!(s.len(), 3);
    assert_eq!(s.image(0), ds.image(4));
    assert_eq!(s.labels, [ds.labels[4], ds.labels[1], ds.labels[4]]);
    assert_eq!(ds.limit(4).len(), 4);
    assert_eq!(ds.limit(4).image(3), ds.image(3));
    assert_eq!(ds.limit(100).len(), 10);
    assert_ne!(ds.digest(), ds.limit(9).digest());
    assert_eq!(ds.digest().len(), 8);
    assert!(!ds.is_empty() && ds.subset(&[]).is_empty());
}

#[test]
fn split_holdout_is_stratified_disjoint_and_deterministic() {
    let ds = tiny(103, 1, 2, 2, 4);
    let (keep, hold) = ds.split_holdout(0.2, 7).unwrap();
    let (keep2, hold2) = ds.split_holdout(0.2, 7).unwrap();
    assert_eq!(keep.images, keep2.images);
    assert_eq!(hold.images, hold2.images);
    assert_eq!(hold.len(), 21); // round(0.2 * 103)
    assert_eq!(keep.len() + hold.len(), ds.len());
    let mut all: Vec<usize> = (0..keep.len())
        .map(|i| index_of(keep.image(i)))
        .chain((0..hold.len()).map(|i| index_of(hold.image(i))))
        .collect();
    all.sort();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    for (i, &l) in hold.labels.iter().enumerate() {
        assert_eq!(l, ds.labels[index_of(hold.image(i))]);
    }
    // Each class gives 5 or 6 of its ~26 images.
    assert!(
        hold.class_counts().iter().all(|&c| c == 5 || c == 6),
        "{:?}",
        hold.class_counts()
    );
    let (_, other) = ds.split_holdout(0.2, 8).unwrap();
    assert_ne!(other.images, hold.images);

    for bad in [1.0, -0.1, f64::NAN] {
        let e = err_text(ds.split_holdout(bad, 1));
        assert!(e.contains("[0, 1)"), "{e}");
    }
    let e = err_text(ds.split_holdout(0.0, 1));
    assert!(e.contains("empty part"), "{e}");
    let e = err_text(tiny(2, 1, 1, 2, 2).split_holdout(0.1, 1));
    assert!(e.contains("empty part"), "{e}");
}

// ---------------------------------------------------------------- batching

#[test]
fn epoch_order_is_a_deterministic_permutation() {
    let a = epoch_order(100, 3, 0);
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(100, 3, 0));
    assert_ne!(a, epoch_order(100, 3, 1));
    assert_ne!(a, epoch_order(100, 4, 0));
    assert!(epoch_order(0, 1, 0).is_empty());
}

#[test]
fn make_batch_normalizes_exactly() {
    let mut ds = tiny(3, 3, 2, 2, 2);
    ds.images[4 * 3 + 4] = 51; // image 1, channel 1, pixel 0
    let norm = Normalization::cifar10();
    let (x, y) = make_batch(&ds, &[2, 1], &norm, Augment::None, 0);
    assert_eq!(x.shape, [2, 3, 2, 2]);
    assert_eq!(y, [ds.labels[2], ds.labels[1]]);
    let want = (51.0f32 / 255.0 - 0.4822) / 0.2435;
    assert_eq!(x.data[12 + 4], want);
    for (k, &b) in ds.image(2).iter().enumerate() {
        let c = k / 4;
        assert_eq!(x.data[k], (b as f32 / 255.0 - norm.mean[c]) / norm.std[c]);
    }
    assert_eq!(norm.apply(ds.image(1)), x.data[12..24]);
}

#[test]
fn normalization_from_dataset_is_exact_for_known_pixels() {
    let mut ds = tiny(2, 2, 1, 2, 2);
    ds.images = vec![0, 255, 10, 10, 0, 255, 10, 10];
    let n = Normalization::from_dataset(&ds);
    assert!(
        (n.mean[0] - 0.5).abs() < 1e-6 && (n.std[0] - 0.5).abs() < 1e-6,
        "{n:?}"
    );
    // A constant channel gets std 1 so nothing divides by zero.
    assert!(
        (n.mean[1] - 10.0 / 255.0).abs() < 1e-6 && n.std[1] == 1.0,
        "{n:?}"
    );
}

#[test]
fn flip_with_no_padding_mirrors_or_keeps_the_image() {
    let ds = tiny(1, 3, 4, 5, 1);
    let norm = Normalization::identity(3);
    let aug = Augment::FlipCrop { pad: 0 };
    let (plain, _) = make_batch(&ds, &[0], &norm, Augment::None, 0);
    let mut mirrored = plain.data.clone();
    for row in mirrored.chunks_mut(5) {
        row.reverse();
    }
    let (mut flips, mut keeps) = (0, 0);
    for seed in 0..64 {
        let (x, _) = make_batch(&ds, &[0], &norm, aug, seed);
        if x.data == mirrored {
            flips += 1;
        } else {
            assert_eq!(x.data, plain.data, "seed {seed}");
            keeps += 1;
        }
    }
    assert!(flips > 10 && keeps > 10, "{flips} flips, {keeps} keeps");
}

#[test]
fn crop_shifts_within_the_padding_and_fills_zeros() {
    let mut ds = tiny(1, 1, 8, 8, 1);
    ds.images.fill(255);
    let norm = Normalization::identity(1);
    let mut shifts = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let (x, _) = make_batch(&ds, &[0], &norm, Augment::FlipCrop { pad: 2 }, seed);
        // The kept region is a rectangle of ones touching two sides.
        let rows: Vec<usize> = (0..8)
            .filter(|&y| x.data[y * 8..y * 8 + 8].contains(&1.0))
            .collect();
        let cols: Vec<usize> = (0..8)
            .filter(|&c| (0..8).any(|y| x.data[y * 8 + c] == 1.0))
            .collect();
        let ones = x.data.iter().filter(|&&v| v == 1.0).count();
        assert_eq!(ones, rows.len() * cols.len());
        assert!(rows.len() >= 6 && cols.len() >= 6);
        assert!(x.data.iter().all(|&v| v == 0.0 || v == 1.0));
        shifts.insert((rows.len(), cols.len()));
    }
    assert_eq!(shifts.len(), 9, "{shifts:?}");
}

#[test]
fn make_batch_is_deterministic_per_seed_and_position() {
    let ds = load(&DataSpec::Synthetic(40), Split::Train).unwrap();
    let norm = Normalization::from_dataset(&ds);
    let aug = Augment::parse("flipcrop").unwrap();
    let idx: Vec<usize> = (0..32).collect();
    let (a, _) = make_batch(&ds, &idx, &norm, aug, 9);
    let (b, _) = make_batch(&ds, &idx, &norm, aug, 9);
    let (c, _) = make_batch(&ds, &idx, &norm, aug, 10);
    assert_eq!(a, b);
    assert_ne!(a, c);
    // Image 0 of a batch depends only on the seed, not the batch around it.
    let (one, _) = make_batch(&ds, &[0], &norm, aug, 9);
    assert_eq!(one.data, a.data[..3072]);
}

#[test]
fn augment_parse_and_display() {
    assert_eq!(Augment::parse("none").unwrap(), Augment::None);
    assert_eq!(
        Augment::parse("flipcrop").unwrap(),
        Augment::FlipCrop { pad: 4 }
    );
    assert_eq!(Augment::FlipCrop { pad: 4 }.to_string(), "flipcrop");
    let e = err_text(Augment::parse("mixup"));
    assert!(e.contains("mixup") && e.contains("none, flipcrop"), "{e}");
}

#[test]
fn batch_iter_covers_the_order() {
    let ds = tiny(10, 1, 2, 2, 2);
    let norm = Normalization::identity(1);
    let order = epoch_order(10, 1, 0);
    let it = BatchIter::new(&ds, order.clone(), 4, &norm);
    assert_eq!(it.len(), 3);
    let batches: Vec<_> = it.collect();
    assert_eq!(
        batches.iter().map(|(x, _)| x.batch()).collect::<Vec<_>>(),
        [4, 4, 2]
    );
    let labels: Vec<u32> = batches.iter().flat_map(|(_, y)| y.clone()).collect();
    assert_eq!(
        labels,
        order.iter().map(|&i| ds.labels[i]).collect::<Vec<_>>()
    );
    let dropped = BatchIter::new(&ds, order, 4, &norm)
        .with_augment(Augment::FlipCrop { pad: 1 }, 5)
        .drop_last(true);
    assert_eq!(dropped.count(), 2);
}
