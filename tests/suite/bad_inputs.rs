//! The bad-input matrix of RELIABILITY.md, over the real binary: for every
//! kind of file cardc reads, a valid file is damaged in generic ways (empty,
//! truncated at several points, bytes flipped, magic replaced) and in ways
//! specific to its format (wrong version, absurd sizes in headers, wrong
//! shapes, labels out of range, NaN weights), and the command that reads it
//! must either accept it (only where the damage can leave a valid file,
//! e.g. a flipped pixel) or fail with exit status 1 and one stderr line that
//! names the file, without a panic and without leaving anything at `--out`.
//! Bad flags get the same treatment.
//!
//! Adding a reader is one entry in [`readers`].

use crate::common::{cardc, stderr};
use cardc::data::{Split, generate_synthetic, write_cifar10_bin, write_imagefolder};
use std::path::{Path, PathBuf};

/// One damaged variant of a valid file.
struct Case {
    label: String,
    bytes: Vec<u8>,
    /// The damage cannot leave a valid file: the command must fail.
    must_fail: bool,
}

/// A reader under test: a valid file, where it goes, and the command that
/// reads it.
struct Reader {
    name: &'static str,
    /// Path of the damaged file inside the case directory.
    file: String,
    valid: Vec<u8>,
    /// Other files of the input, written unchanged beside it.
    beside: Vec<(String, Vec<u8>)>,
    /// `{file}`, `{dir}` and `{out}` are replaced per case.
    args: Vec<String>,
    /// Whether truncation, emptiness and a replaced magic must be refused
    /// (formats with a magic and self-described sizes).
    structural_must_fail: bool,
    /// Whether any flipped byte must be refused (checksummed formats).
    flips_must_fail: bool,
    /// Flip bytes at all (off where an accepted flip would run a slow build).
    flips: bool,
    specific: Vec<Case>,
}

/// Damage to the 28-byte container header every cardc file shares (magic,
/// version, kind, payload length, checksum) and to its payload: versions 99
/// and 0, `other_kind` (label, code), checkpoint and unknown kinds, payload
/// lengths u64::MAX, +1 and 0, a trailing byte, a zeroed checksum and a
/// garbage payload under a fixed checksum.
fn container_cases(v: &[u8], other_kind: (&str, u32)) -> Vec<Case> {
    let n = v.len() as u64;
    vec![
        case("version 99", patch(v, 8, &99u32.to_le_bytes())),
        case("version 0", patch(v, 8, &0u32.to_le_bytes())),
        case(other_kind.0, patch(v, 12, &other_kind.1.to_le_bytes())),
        case("kind checkpoint", patch(v, 12, &3u32.to_le_bytes())),
        case("unknown kind", patch(v, 12, &77u32.to_le_bytes())),
        case(
            "payload length u64::MAX",
            patch(v, 16, &u64::MAX.to_le_bytes()),
        ),
        case(
            "payload length + 1",
            patch(v, 16, &(n - 28 + 1).to_le_bytes()),
        ),
        case("payload length 0", patch(v, 16, &0u64.to_le_bytes())),
        case("trailing byte", [v.to_vec(), vec![0]].concat()),
        case("checksum", patch(v, 24, &[0, 0, 0, 0])),
        case(
            "payload garbage with fixed checksum",
            with_fixed_crc([v[..28].to_vec(), vec![0xff; v.len() - 28]].concat()),
        ),
    ]
}

fn reader(name: &'static str, file: &str, valid: Vec<u8>, args: &[&str]) -> Reader {
    Reader {
        name,
        file: file.to_string(),
        valid,
        beside: Vec::new(),
        args: args.iter().map(|s| s.to_string()).collect(),
        structural_must_fail: true,
        flips_must_fail: false,
        flips: true,
        specific: Vec::new(),
    }
}

fn case(label: &str, bytes: Vec<u8>) -> Case {
    Case {
        label: label.to_string(),
        bytes,
        must_fail: true,
    }
}

/// Empty, truncated, flipped and re-magicked variants of `r.valid`.
fn generic_cases(r: &Reader) -> Vec<Case> {
    let v = &r.valid;
    let n = v.len();
    let mut cases = vec![Case {
        label: "empty".into(),
        bytes: Vec::new(),
        must_fail: r.structural_must_fail,
    }];
    let mut cuts = vec![1, 4, 8, 16, 28, n / 4, n / 2, 3 * n / 4, n - 1];
    cuts.sort();
    cuts.dedup();
    for cut in cuts.into_iter().filter(|&c| c > 0 && c < n) {
        cases.push(Case {
            label: format!("truncated at {cut} of {n}"),
            bytes: v[..cut].to_vec(),
            must_fail: r.structural_must_fail,
        });
    }
    let mut magic = v.clone();
    for (b, j) in magic.iter_mut().zip(b"JUNK") {
        *b = *j;
    }
    cases.push(Case {
        label: "magic replaced".into(),
        bytes: magic,
        must_fail: r.structural_must_fail,
    });
    if r.flips {
        for at in [5, 9, 13, 17, 25, n / 8, n / 3, n / 2, 2 * n / 3, n - 2] {
            if at < n {
                let mut f = v.clone();
                f[at] ^= 0x5a;
                cases.push(Case {
                    label: format!("byte {at} flipped"),
                    bytes: f,
                    must_fail: r.flips_must_fail,
                });
            }
        }
    }
    cases
}

/// Runs every case of `r`; returns (tried, handled cleanly, failures).
fn run_reader(r: &Reader, root: &Path) -> (usize, usize, Vec<String>) {
    let mut cases = generic_cases(r);
    cases.extend(r.specific.iter().map(|c| Case {
        label: c.label.clone(),
        bytes: c.bytes.clone(),
        must_fail: c.must_fail,
    }));
    let mut failures = Vec::new();
    let tried = cases.len();
    for (i, c) in cases.iter().enumerate() {
        let dir = root.join(format!("{}-{i}", r.name));
        let outdir = root.join(format!("{}-{i}-out", r.name));
        std::fs::create_dir_all(&outdir).unwrap();
        for (p, bytes) in &r.beside {
            write(&dir.join(p), bytes);
        }
        let file = dir.join(&r.file);
        write(&file, &c.bytes);
        let out = outdir.join("out.card");
        let sub = |a: &String| {
            a.replace("{file}", file.to_str().unwrap())
                .replace("{dir}", dir.to_str().unwrap())
                .replace("{out}", out.to_str().unwrap())
        };
        let args: Vec<String> = r.args.iter().map(sub).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = cardc(&args);
        let e = stderr(&o);
        let needle = Path::new(&r.file).file_name().unwrap().to_str().unwrap();
        let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
        let leftovers = std::fs::read_dir(&outdir).unwrap().count();
        let clean_failure = o.status.code() == Some(1)
            && lines.len() == 1
            && lines[0].starts_with("cardc: error: ")
            && lines[0].contains(needle)
            && leftovers == 0;
        let accepted = o.status.success() && !c.must_fail;
        if std::env::var_os("CARDC_MATRIX_VERBOSE").is_some() {
            // What each case got, for reviewing the messages.
            eprintln!("{} / {}: {}", r.name, c.label, lines.join(" | "));
        }
        if !(clean_failure || accepted) || e.contains("panicked") {
            failures.push(format!(
                "{} / {}: exit {:?}, {leftovers} files at --out, stderr: {e}",
                r.name,
                c.label,
                o.status.code()
            ));
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&outdir);
    }
    let clean = tried - failures.len();
    (tried, clean, failures)
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A header-patched copy of a container: `at` gets `value`, little-endian.
fn patch(bytes: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    b
}

/// A container whose payload was changed in place, with the checksum fixed
/// so that only the content checks can catch the damage.
fn with_fixed_crc(mut b: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&b[28..]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A `.npy` file of `shape` with a hand-written header (`descr` as given)
/// and `data` after it.
fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
    let f = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Everything the matrix reads, made once: a tiny trained card (3x32x32,
/// 10 classes), its ONNX export, datasets in every format and a compiled
/// artifact.
struct Fixture {
    dir: tempfile::TempDir,
    card: Vec<u8>,
    card_path: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let desc = dir.path().join("tiny.toml");
        std::fs::write(
            &desc,
            "name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c4\", \"M\", \"c4\", \"M\"]\n",
        )
        .unwrap();
        let card_path = dir.path().join("tiny.card");
        let o = cardc(&[
            "train",
            "--arch",
            desc.to_str().unwrap(),
            "--data",
            "synthetic:64",
            "--epochs",
            "1",
            "--batch",
            "32",
            "--backend",
            "cpu",
            "--out",
            card_path.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let card = std::fs::read(&card_path).unwrap();
        Fixture {
            dir,
            card,
            card_path,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn model(&self) -> &str {
        self.card_path.to_str().unwrap()
    }
}

/// The card reader (`info`), with header, checksum and content damage.
fn card_reader(f: &Fixture) -> Reader {
    let v = f.card.clone();
    let mut r = reader("card", "x.card", v.clone(), &["info", "{file}"]);
    r.flips_must_fail = true;
    // Find a stored f32 weight to overwrite: the first conv weight's bytes.
    let card = cardc::card::Card::load(&f.card_path).unwrap();
    let w = card.model.params[1][0].data[0].to_le_bytes();
    let at = v
        .windows(4)
        .position(|x| x == w)
        .expect("weight bytes in file");
    r.specific = container_cases(&v, ("kind deck", 2));
    r.specific.extend([
        case(
            "NaN weight",
            with_fixed_crc(patch(&v, at, &f32::NAN.to_le_bytes())),
        ),
        case(
            "infinite weight",
            with_fixed_crc(patch(&v, at, &f32::INFINITY.to_le_bytes())),
        ),
    ]);
    r
}

/// The ONNX importer, with structural damage made through the protobuf types.
fn onnx_reader(f: &Fixture) -> Reader {
    use prost::Message;
    use tract_onnx::pb;
    let onnx = f.path("tiny.onnx");
    let o = cardc(&[
        "export",
        "--model",
        f.model(),
        "--out",
        onnx.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = std::fs::read(&onnx).unwrap();
    let mut r = reader(
        "onnx",
        "x.onnx",
        v.clone(),
        &["import", "{file}", "--out", "{out}"],
    );
    // Protobuf has no magic and tolerates some flips; structure must fail.
    r.structural_must_fail = false;
    let model = pb::ModelProto::decode(v.as_slice()).unwrap();
    let edit = |f: &dyn Fn(&mut pb::ModelProto)| {
        let mut m = model.clone();
        f(&mut m);
        m.encode_to_vec()
    };
    let first_float_init = |m: &mut pb::ModelProto| -> usize {
        let g = m.graph.as_ref().unwrap();
        g.initializer
            .iter()
            .position(|t| t.dims.len() == 4)
            .unwrap()
    };
    r.specific = vec![
        case("no graph", edit(&|m| m.graph = None)),
        case("no opset", edit(&|m| m.opset_import.clear())),
        case(
            "unsupported op",
            edit(&|m| m.graph.as_mut().unwrap().node[0].op_type = "Einsum".into()),
        ),
        case(
            "absurd initializer dims",
            edit(&|m| {
                let i = first_float_init(m);
                m.graph.as_mut().unwrap().initializer[i].dims = vec![1 << 40, 1 << 40, 3, 3];
            }),
        ),
        case(
            "negative initializer dims",
            edit(&|m| {
                let i = first_float_init(m);
                m.graph.as_mut().unwrap().initializer[i].dims = vec![-4, 3, 3, 3];
            }),
        ),
        case(
            "initializer data short",
            edit(&|m| {
                let i = first_float_init(m);
                let t = &mut m.graph.as_mut().unwrap().initializer[i];
                let keep = t.raw_data.len() / 2;
                t.raw_data.truncate(keep);
                t.float_data.truncate(t.float_data.len() / 2);
            }),
        ),
        case(
            "NaN weight",
            edit(&|m| {
                let i = first_float_init(m);
                let t = &mut m.graph.as_mut().unwrap().initializer[i];
                if t.raw_data.len() >= 4 {
                    t.raw_data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
                } else {
                    t.float_data[0] = f32::NAN;
                }
            }),
        ),
        case(
            "wrong input shape",
            edit(&|m| {
                let g = m.graph.as_mut().unwrap();
                if let Some(pb::type_proto::Value::TensorType(tt)) =
                    g.input[0].r#type.as_mut().and_then(|t| t.value.as_mut())
                    && let Some(s) = tt.shape.as_mut()
                {
                    s.dim.truncate(2);
                }
            }),
        ),
    ];
    r
}

/// CIFAR-10 binary: `test_batch.bin` and the class list beside it, read
/// by `eval`.
fn cifar_readers(f: &Fixture) -> Vec<Reader> {
    let ds = generate_synthetic(15, Split::Test);
    let p = f.path("test_batch.bin");
    write_cifar10_bin(&p, &ds).unwrap();
    let v = std::fs::read(&p).unwrap();
    let mut r = reader(
        "cifar10",
        "test_batch.bin",
        v.clone(),
        &["eval", "--model", f.model(), "--data", "cifar10:{dir}"],
    );
    // No magic: a flipped label byte fails, a flipped pixel does not; a cut
    // at a record boundary is a valid, shorter file.
    r.structural_must_fail = false;
    r.specific = vec![
        case("label 10 of 10 classes", patch(&v, 3073, &[10])),
        case("label 255", patch(&v, 0, &[255])),
        case("one byte extra", [v.clone(), vec![0]].concat()),
        case("half a record", v[..1536].to_vec()),
    ];
    // A damaged class list beside a valid batch.
    let mut meta = reader(
        "cifar10 batches.meta.txt",
        "batches.meta.txt",
        b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n".to_vec(),
        &["eval", "--model", f.model(), "--data", "cifar10:{dir}"],
    );
    meta.beside = vec![("test_batch.bin".into(), v)];
    meta.structural_must_fail = false;
    meta.flips = false;
    let many: String = (0..300).map(|i| format!("c{i}\n")).collect();
    meta.specific = vec![
        case("300 class names", many.into_bytes()),
        case("blank", b"\n\n  \n".to_vec()),
        case("1 class for labels up to 2", b"a\n".to_vec()),
        case("not UTF-8", vec![0xff, 0xfe, b'\n', 0x80]),
    ];
    vec![r, meta]
}

/// CIFAR-10-C: `labels.npy`, a corruption `.npy` and the manifest, read by
/// `eval --data cifar10c:DIR`.
fn cifar10c_readers(f: &Fixture) -> Vec<Reader> {
    // 5 severities x 2 images of 32x32x3 (no manifest).
    let labels_v = npy("|u1", "(10,)", false, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let images: Vec<u8> = (0..10 * 32 * 32 * 3).map(|i| (i * 7 % 251) as u8).collect();
    let images_v = npy("|u1", "(10, 32, 32, 3)", false, &images);
    let args = &["eval", "--model", f.model(), "--data", "cifar10c:{dir}"];

    let mut labels = reader("cifar10c labels.npy", "labels.npy", labels_v.clone(), args);
    labels.beside = vec![("gaussian_noise.npy".into(), images_v.clone())];
    labels.flips_must_fail = false;
    labels.specific = vec![
        case("label 10", npy("|u1", "(10,)", false, &[10; 10])),
        case("label -1", npy("|i1", "(10,)", false, &[0xff; 10])),
        case("7 labels", npy("|u1", "(7,)", false, &[0; 7])),
        case("2-D labels", npy("|u1", "(5, 2)", false, &[0; 10])),
        case("float labels", npy("<f4", "(10,)", false, &[0; 40])),
        case(
            "shape 10^18",
            npy("|u1", "(1000000000000000000,)", false, &[0; 10]),
        ),
        case(
            "shape overflows",
            npy(
                "<i8",
                "(4294967296, 4294967296, 4294967296)",
                false,
                &[0; 10],
            ),
        ),
        case("shape not a number", npy("|u1", "(ten,)", false, &[0; 10])),
        case("version 9", patch(&labels_v, 6, &[9])),
        case("header length 65535", patch(&labels_v, 8, &[0xff, 0xff])),
        case(
            "version 2 header length 4 GiB",
            [
                patch(&labels_v[..8], 6, &[2]),
                vec![0xff; 4],
                labels_v[10..].to_vec(),
            ]
            .concat(),
        ),
    ];

    let mut imgs = reader(
        "cifar10c images .npy",
        "gaussian_noise.npy",
        images_v.clone(),
        args,
    );
    imgs.beside = vec![("labels.npy".into(), labels_v.clone())];
    imgs.specific = vec![
        case("4 channels", npy("|u1", "(10, 32, 16, 4)", false, &images)),
        case(
            "wrong rows",
            npy("|u1", "(5, 32, 32, 3)", false, &images[..5 * 3072]),
        ),
        case(
            "int16 images",
            npy("<i2", "(10, 32, 16, 3)", false, &images),
        ),
        case(
            "fortran order",
            npy("|u1", "(10, 32, 32, 3)", true, &images),
        ),
        // Not here: 16x16 images for a 32x32 card fail cleanly but only
        // after eval's "evaluating ..." line (the size check is in
        // cli/eval.rs, after the banner; RELIABILITY.md, open items).
        case("2-D", npy("|u1", "(10, 3072)", false, &images)),
        case(
            "absurd image size, no rows",
            npy("|u1", "(0, 4294967296, 4294967296, 3)", false, &[]),
        ),
        case(
            "shape 10^12 rows",
            npy("|u1", "(1000000000000, 32, 32, 3)", false, &images),
        ),
    ];

    let manifest_v = serde_json::json!({
        "severities": [1, 2, 3, 4, 5], "images": 2,
        "class_names": ["a","b","c","d","e","f","g","h","i","j"],
        "seed": 0, "source": "test", "corruptions": ["gaussian_noise"]
    })
    .to_string()
    .into_bytes();
    let mut manifest = reader("cifar10c manifest", "cardc-corrupt.json", manifest_v, args);
    manifest.beside = vec![
        ("labels.npy".into(), labels_v),
        ("gaussian_noise.npy".into(), images_v),
    ];
    manifest.structural_must_fail = false;
    manifest.flips = false;
    let m = |v: serde_json::Value| v.to_string().into_bytes();
    manifest.specific = vec![
        case(
            "severity 7",
            m(
                serde_json::json!({"severities": [7, 1, 2, 3, 4], "images": 2,
                "class_names": ["a","b","c","d","e","f","g","h","i","j"], "seed": 0,
                "source": "", "corruptions": []}),
            ),
        ),
        case(
            "images overflow",
            m(
                serde_json::json!({"severities": [1, 2, 3, 4, 5], "images": u64::MAX / 2,
                "class_names": ["a","b","c","d","e","f","g","h","i","j"], "seed": 0,
                "source": "", "corruptions": []}),
            ),
        ),
        case(
            "3 classes",
            m(
                serde_json::json!({"severities": [1, 2, 3, 4, 5], "images": 2,
                "class_names": ["a","b","c"], "seed": 0, "source": "", "corruptions": []}),
            ),
        ),
        case("not JSON", b"severities = 1".to_vec()),
    ];
    vec![labels, imgs, manifest]
}

/// Image folders: one PNG among valid ones, read by `eval`.
fn imagefolder_reader(f: &Fixture) -> Reader {
    let root = f.path("images");
    let ds = generate_synthetic(20, Split::Test);
    write_imagefolder(&root, &ds).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for class in std::fs::read_dir(&root).unwrap() {
        let class = class.unwrap().path();
        for img in std::fs::read_dir(&class).unwrap() {
            let img = img.unwrap().path();
            let rel = img
                .strip_prefix(&root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            files.push((rel, std::fs::read(&img).unwrap()));
        }
    }
    files.sort();
    let (target, v) = files.remove(0);
    let mut r = reader(
        "imagefolder png",
        &target,
        v.clone(),
        &["eval", "--model", f.model(), "--data", "imagefolder:{dir}"],
    );
    r.beside = files;
    // A PNG cut inside its final chunk's CRC still decodes to the full
    // image, and flipped pixel data can pass its zlib checks: the cases
    // below must fail, the generic ones only fail cleanly.
    r.structural_must_fail = false;
    r.flips_must_fail = false;
    // IHDR width/height at bytes 16..24; the chunk CRC is left stale, and a
    // second case fixes it so the size itself must be refused.
    let mut huge = patch(&v, 16, &100_000u32.to_be_bytes());
    huge = patch(&huge, 20, &100_000u32.to_be_bytes());
    let mut huge_crc = huge.clone();
    let crc = crc32fast::hash(&huge_crc[12..29]);
    huge_crc[29..33].copy_from_slice(&crc.to_be_bytes());
    let small = {
        let img = image::RgbImage::new(16, 16);
        let mut b = std::io::Cursor::new(Vec::new());
        img.write_to(&mut b, image::ImageFormat::Png).unwrap();
        b.into_inner()
    };
    r.specific = vec![
        case("IHDR 100000x100000 (stale CRC)", huge),
        case("IHDR 100000x100000", huge_crc),
        case("16x16 among 32x32", small),
        case("text named .png", b"hello, not an image".to_vec()),
        case("cut in the image data", v[..v.len() / 2].to_vec()),
        case("header only", v[..33].to_vec()),
    ];
    r
}

/// Model description files, read by `train --arch FILE`.
fn model_desc_reader() -> Reader {
    let v =
        b"name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c4\", \"M\", \"c4\", \"M\"]\n".to_vec();
    let mut r = reader(
        "model description",
        "desc.toml",
        v,
        &[
            "train",
            "--arch",
            "{file}",
            "--data",
            "synthetic:64",
            "--epochs",
            "1",
            "--batch",
            "32",
            "--backend",
            "cpu",
            "--out",
            "{out}",
        ],
    );
    // Text: a cut after a full line or a flipped letter in a name can stay valid.
    r.structural_must_fail = false;
    let d = |s: &str| s.as_bytes().to_vec();
    r.specific = vec![
        case(
            "width 10^9",
            d("name = \"x\"\nfamily = \"plain\"\nlayers = [\"c1000000000\"]\n"),
        ),
        case(
            "two 20000-wide convs (3.6e9 weights)",
            d("name = \"x\"\nfamily = \"plain\"\nlayers = [\"c20000\", \"c20000\"]\n"),
        ),
        case(
            "fc 10^12",
            d("name = \"x\"\nfamily = \"plain\"\nlayers = [\"c4\"]\nfc = [1000000000000]\n"),
        ),
        case(
            "input 3x10^9x10^9",
            d(
                "name = \"x\"\nfamily = \"plain\"\ninput = [3, 1000000000, 1000000000]\nlayers = [\"c4\"]\n",
            ),
        ),
        case(
            "input of u64 max",
            d(
                "name = \"x\"\nfamily = \"plain\"\ninput = [3, 9223372036854775807, 9223372036854775807]\nlayers = [\"c4\"]\n",
            ),
        ),
        case(
            "negative width",
            d("name = \"x\"\nfamily = \"plain\"\nlayers = [\"c-4\"]\n"),
        ),
        case(
            "unknown layer",
            d("name = \"x\"\nfamily = \"plain\"\nlayers = [\"q8\"]\n"),
        ),
        case(
            "unknown family",
            d("name = \"x\"\nfamily = \"transformer\"\n"),
        ),
        case(
            "pool below 1x1",
            d(
                "name = \"x\"\nfamily = \"plain\"\nlayers = [\"M\", \"M\", \"M\", \"M\", \"M\", \"M\"]\n",
            ),
        ),
        case(
            "resnet without stages",
            d("name = \"x\"\nfamily = \"resnet\"\nstem = 8\n"),
        ),
        case(
            "resnet stride 0",
            d("name = \"x\"\nfamily = \"resnet\"\nstem = 8\nstages = [[8, 1, 0]]\n"),
        ),
        case(
            "wrong input shape",
            d("name = \"x\"\nfamily = \"plain\"\ninput = [1, 28, 28]\nlayers = [\"c4\"]\n"),
        ),
        case(
            "unknown field",
            d("name = \"x\"\nfamily = \"plain\"\nlayerz = [\"c4\"]\n"),
        ),
        case("binary", vec![0, 159, 146, 150, 255, 0]),
    ];
    r
}

/// Compiled-artifact directories: `report.json` (and the card in them),
/// read by `cardc run`.
fn artifact_readers(f: &Fixture) -> Vec<Reader> {
    let art = f.path("artifact");
    let o = cardc(&[
        "compile",
        "--model",
        f.model(),
        "--target",
        "host",
        "--out",
        art.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut files = Vec::new();
    for e in std::fs::read_dir(&art).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            files.push((name, std::fs::read(&p).unwrap()));
        }
    }
    let take = |name: &str| -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
        let v = files.iter().find(|(n, _)| n == name).unwrap().1.clone();
        let rest = files.iter().filter(|(n, _)| n != name).cloned().collect();
        (v, rest)
    };
    let args = &["run", "{dir}", "--data", "synthetic:20"];
    let (report, rest) = take("report.json");
    let mut r = reader("artifact report.json", "report.json", report.clone(), args);
    r.beside = rest;
    r.flips = false;
    let text = String::from_utf8(report).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["target"] = "z80".into();
    r.specific = vec![
        case("target z80", json.to_string().into_bytes()),
        case("not JSON", b"flash_bytes: 12".to_vec()),
        case("array", b"[1, 2, 3]".to_vec()),
    ];
    let (card, rest) = take("model.card");
    let mut c = reader("artifact model.card", "model.card", card, args);
    c.beside = rest;
    c.flips = false;
    // Truncations must fail; a handful of cuts keeps the C builds few.
    let n = c.valid.len();
    c.specific = vec![case("truncated", c.valid[..n / 2].to_vec())];
    vec![r, c]
}

/// A valid deck's payload (the container image without its header).
fn deck_payload(deck: &cardc::deck::Deck, dir: &Path) -> Vec<u8> {
    let p = dir.join("payload.deck");
    deck.save(&p).unwrap();
    std::fs::read(&p).unwrap()[28..].to_vec()
}

/// `payload` in a container with a correct header and checksum, so that
/// only the deck's own checks can refuse it.
fn deck_file(payload: &[u8]) -> Vec<u8> {
    cardc::fuzzing::wrap_payload(cardc::card::Kind::Deck, payload)
}

/// The bytes of `v` (f32, little-endian) inside `bytes`: first or last match.
fn find_f32(bytes: &[u8], v: f32, last: bool) -> usize {
    let w = v.to_le_bytes();
    let mut hits = bytes.windows(4).enumerate().filter(|(_, x)| *x == w);
    let hit = if last { hits.next_back() } else { hits.next() };
    hit.expect("value bytes in file").0
}

/// Decks the `deck` command cannot make: a payload is
/// `varint(members) ++ members ++ tail` (gate, reference, provenance,
/// metrics), so members of valid one-card decks are spliced into
/// inconsistent ones. A member's length is the difference between the
/// payloads of a two-card and a one-card deck of it.
fn deck_content_cases(dir: &Path) -> Vec<Case> {
    use crate::fuzz_smoke::{tiny_card, tiny_deck};
    use cardc::deck::{GateKind, GateSettings, Metric, Scope};
    let one = |k| GateSettings {
        kind: GateKind::Spectral,
        k,
        metric: Metric::L1,
        scope: Scope::Input,
    };
    // (member bytes, tail bytes, the one-card deck) of a card.
    let split = |card: cardc::card::Card| {
        let d1 = tiny_deck(vec![card.clone()], one(1));
        let p1 = deck_payload(&d1, dir);
        let mut d2 = tiny_deck(vec![card.clone(), card], one(1));
        // Members differ only in their names' last byte and their
        // signatures' values, so both have the length of the first.
        d2.members[1].augment = d2.members[0].augment.clone();
        let p2 = deck_payload(&d2, dir);
        let len = p2.len() - p1.len();
        (p1[1..1 + len].to_vec(), p1[1 + len..].to_vec(), d1)
    };
    let (a, tail, deck_a) = split(tiny_card([3, 8, 8], 3, 1, "f32"));
    let (gray, _, _) = split(tiny_card([1, 8, 8], 3, 2, "f32"));
    let (four, _, _) = split(tiny_card([3, 8, 8], 4, 3, "f32"));
    let mut renamed = tiny_card([3, 8, 8], 3, 4, "f32");
    renamed.class_names = vec!["x".into(), "y".into(), "z".into()];
    let (other_names, _, _) = split(renamed);
    // Members are named by position, so a second member "m2" differs from
    // "m1" in its name's last byte; its name is at the start (after the
    // length byte).
    let second = |m: &[u8]| {
        let mut m = m.to_vec();
        assert_eq!(&m[..3], b"\x02m1");
        m[2] = b'2';
        m
    };
    let deck = |n: &[u8], members: &[&Vec<u8>], tail: &[u8]| {
        let mut p = n.to_vec();
        for m in members {
            p.extend_from_slice(m);
        }
        p.extend_from_slice(tail);
        deck_file(&p)
    };
    // The signature is a member's last field: a length byte (192 < 251,
    // one byte) and 192 f32s.
    let sig_at = a.len() - 4 * 192;
    assert_eq!(a[sig_at - 1], 192);
    let mut short_sig = a[..a.len() - 4].to_vec();
    short_sig[sig_at - 1] = 191;
    let mut nan_sig = a.clone();
    nan_sig[sig_at + 8..sig_at + 12].copy_from_slice(&f32::NAN.to_le_bytes());
    let ref_at = find_f32(&tail, deck_a.reference[5], false);
    let mut inf_ref = tail.clone();
    inf_ref[ref_at..ref_at + 4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    let mut k0 = tail.clone();
    // The tail starts with the gate: kind, k, metric, scope (one byte each).
    assert_eq!(k0[1], 1);
    k0[1] = 0;
    let mut k5 = tail.clone();
    k5[1] = 5;
    let mut huge = vec![253u8];
    huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
    vec![
        case("no member cards", deck(&[0], &[], &tail)),
        case("member count 2^40", deck(&huge, &[&a], &tail)),
        case(
            "member count 3 for 2",
            deck(&[3], &[&a, &second(&a)], &tail),
        ),
        case(
            "member inputs 3x8x8 and 1x8x8",
            deck(&[2], &[&a, &second(&gray)], &tail),
        ),
        case(
            "member classes 3 and 4",
            deck(&[2], &[&a, &second(&four)], &tail),
        ),
        case(
            "member class names differ",
            deck(&[2], &[&a, &second(&other_names)], &tail),
        ),
        case("two members named m1", deck(&[2], &[&a, &a], &tail)),
        case("signature of 191 values", deck(&[1], &[&short_sig], &tail)),
        case("NaN in a signature", deck(&[1], &[&nan_sig], &tail)),
        case("infinity in the reference", deck(&[1], &[&a], &inf_ref)),
        case("gate k 0", deck(&[1], &[&a], &k0)),
        case("gate k 5 of 1 card", deck(&[1], &[&a], &k5)),
        case("payload cut after the members", deck(&[1], &[&a], &[])),
    ]
}

/// The deck reader, through every command that reads decks: `info`,
/// `eval --model` and `eval --baseline`.
fn deck_readers(f: &Fixture) -> Vec<Reader> {
    // A real deck of two copies of the fixture's card.
    let second = f.path("tiny2.card");
    std::fs::copy(&f.card_path, &second).unwrap();
    let path = f.path("tiny.deck");
    let o = cardc(&[
        "deck",
        "--cards",
        f.model(),
        second.to_str().unwrap(),
        "--data",
        "synthetic:40",
        "--limit",
        "20",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = std::fs::read(&path).unwrap();
    let deck = cardc::deck::Deck::load(&path).unwrap();
    let w = deck.members[0].card.model.params[1][0].data[0];
    let (w1, w2) = (find_f32(&v, w, false), find_f32(&v, w, true));
    assert!(w1 < w2, "the two members' weights");
    // The cards' signatures are zero (flip-and-crop training); the
    // reference is not.
    let reference = find_f32(&v, deck.reference[100], true);
    let mut specific = container_cases(&v, ("kind card", 1));
    specific.extend([
        case(
            "payload length 2^40",
            patch(&v, 16, &(1u64 << 40).to_le_bytes()),
        ),
        case(
            "NaN weight in card 2",
            with_fixed_crc(patch(&v, w2, &f32::NAN.to_le_bytes())),
        ),
        case(
            "infinite weight in card 1",
            with_fixed_crc(patch(&v, w1, &f32::NEG_INFINITY.to_le_bytes())),
        ),
        case(
            "NaN in the clean reference",
            with_fixed_crc(patch(&v, reference, &f32::NAN.to_le_bytes())),
        ),
    ]);
    specific.extend(deck_content_cases(f.dir.path()));
    let mut info = reader("deck (info)", "x.deck", v.clone(), &["info", "{file}"]);
    info.flips_must_fail = true;
    let mut eval = reader(
        "deck (eval)",
        "x.deck",
        v.clone(),
        &[
            "eval",
            "--model",
            "{file}",
            "--data",
            "synthetic:20",
            "--limit",
            "4",
        ],
    );
    eval.flips_must_fail = true;
    let mut baseline = reader(
        "deck (eval --baseline)",
        "x.deck",
        v.clone(),
        &[
            "eval",
            "--model",
            f.model(),
            "--baseline",
            "{file}",
            "--data",
            "synthetic:20",
            "--limit",
            "4",
        ],
    );
    baseline.flips_must_fail = true;
    let mut compile = reader(
        "deck (compile)",
        "x.deck",
        v,
        &[
            "compile", "--model", "{file}", "--target", "host", "--out", "{out}",
        ],
    );
    compile.flips_must_fail = true;
    let copy = |c: &Case| case(&c.label, c.bytes.clone());
    eval.specific = specific.iter().map(copy).collect();
    baseline.specific = specific.iter().map(copy).collect();
    compile.specific = specific.iter().map(copy).collect();
    // A sound deck for other images than the data: refused before the
    // evaluation starts.
    let small = crate::fuzz_smoke::tiny_deck(
        vec![crate::fuzz_smoke::tiny_card([3, 8, 8], 10, 1, "f32")],
        cardc::deck::GateSettings {
            kind: cardc::deck::GateKind::Spectral,
            k: 1,
            metric: cardc::deck::Metric::L1,
            scope: cardc::deck::Scope::Input,
        },
    );
    let small = deck_file(&deck_payload(&small, f.dir.path()));
    eval.specific
        .push(case("deck for 3x8x8 images on 32x32 data", small.clone()));
    baseline
        .specific
        .push(case("deck for 3x8x8 images on 32x32 data", small));
    info.specific = specific;
    vec![info, eval, baseline, compile]
}

fn readers(f: &Fixture) -> Vec<Reader> {
    let mut all = vec![card_reader(f), onnx_reader(f)];
    all.extend(cifar_readers(f));
    all.extend(cifar10c_readers(f));
    all.push(imagefolder_reader(f));
    all.push(model_desc_reader());
    all.extend(artifact_readers(f));
    all.extend(deck_readers(f));
    all
}

#[test]
fn every_reader_refuses_damaged_files_cleanly() {
    let f = Fixture::new();
    let cases = f.path("cases");
    let mut failures = Vec::new();
    let mut table = String::from("reader | tried | handled cleanly\n");
    for r in readers(&f) {
        let (tried, clean, fails) = run_reader(&r, &cases);
        table.push_str(&format!("{} | {tried} | {clean}\n", r.name));
        failures.extend(fails);
    }
    eprintln!("{table}");
    assert!(
        failures.is_empty(),
        "{} bad inputs not handled cleanly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn bad_flags_fail_with_one_line_and_no_output() {
    let f = Fixture::new();
    let out = f.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = out.join("x.card");
    let o = o.to_str().unwrap();
    let m = f.model();
    let unwritable = "/proc/cardc-no-such-dir/x.card";
    let prune = |extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "prune",
            "--method",
            "ft",
            "--from",
            m,
            "--data",
            "synthetic:64",
            "--epochs",
            "1",
            "--batch",
            "32",
            "--out",
            o,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (prune(&["--sparsity", "-0.5"]), "--sparsity"),
        (prune(&["--sparsity", "1"]), "--sparsity"),
        (prune(&["--sparsity", "1.5"]), "--sparsity"),
        (prune(&["--sparsity", "NaN"]), "--sparsity"),
        (
            s(&[
                "prune",
                "--method",
                "magic",
                "--arch",
                "conv4",
                "--sparsity",
                "0.5",
                "--data",
                "synthetic:64",
                "--out",
                o,
            ]),
            "magic",
        ),
        (
            s(&[
                "prune",
                "--method",
                "ft",
                "--from",
                "/nowhere/m.card",
                "--sparsity",
                "0.5",
                "--data",
                "synthetic:64",
                "--out",
                o,
            ]),
            "/nowhere/m.card",
        ),
        (
            s(&[
                "train",
                "--arch",
                "resnet9000",
                "--data",
                "synthetic:64",
                "--batch",
                "32",
                "--out",
                o,
            ]),
            "resnet9000",
        ),
        (
            s(&[
                "train",
                "--arch",
                "conv4",
                "--data",
                "synthetic:64",
                "--epochs",
                "1",
                "--batch",
                "32",
                "--width-mult",
                "0.25",
                "--out",
                unwritable,
            ]),
            "x.card",
        ),
        (
            s(&[
                "train",
                "--arch",
                "conv4",
                "--data",
                "cifar10:/nowhere/c10",
                "--out",
                o,
            ]),
            "/nowhere/c10",
        ),
        (
            s(&[
                "train",
                "--arch",
                "conv4",
                "--data",
                "synthetic:64",
                "--lr=-1",
                "--out",
                o,
            ]),
            "--lr",
        ),
        (
            s(&[
                "train",
                "--arch",
                "conv4",
                "--data",
                "synthetic:64",
                "--epochs",
                "0",
                "--out",
                o,
            ]),
            "--epochs",
        ),
        (
            s(&[
                "train",
                "--arch",
                "conv4",
                "--data",
                "synthetic:64",
                "--batch",
                "1",
                "--out",
                o,
            ]),
            "--batch",
        ),
        (
            s(&["compile", "--model", m, "--target", "z80", "--out", o]),
            "z80",
        ),
        (
            s(&[
                "compile", "--model", m, "--target", "host", "--format", "int3", "--out", o,
            ]),
            "int3",
        ),
        (
            s(&[
                "eval",
                "--model",
                "/nowhere/m.card",
                "--data",
                "synthetic:20",
            ]),
            "/nowhere/m.card",
        ),
        (
            s(&[
                "eval",
                "--model",
                m,
                "--data",
                "synthetic:20",
                "--attack",
                "bogus:1",
            ]),
            "bogus",
        ),
        (
            s(&[
                "eval",
                "--model",
                m,
                "--data",
                "synthetic:20",
                "--corruptions",
                "lava",
                "--severities",
                "1",
            ]),
            "lava",
        ),
        (
            s(&[
                "eval",
                "--model",
                m,
                "--data",
                "synthetic:20",
                "--corruptions",
                "all",
                "--severities",
                "0-9",
            ]),
            "0-9",
        ),
        (s(&["export", "--model", m, "--out", unwritable]), "x.card"),
        (
            s(&["import", "/nowhere/x.onnx", "--out", o]),
            "/nowhere/x.onnx",
        ),
        (
            s(&[
                "quantize",
                "--model",
                m,
                "--format",
                "int3",
                "--data",
                "synthetic:64",
                "--out",
                o,
            ]),
            "int3",
        ),
        (
            s(&[
                "quantize",
                "--model",
                m,
                "--format",
                "int8",
                "--data",
                "synthetic:64",
                "--out",
                unwritable,
            ]),
            "x.card",
        ),
        (
            s(&[
                "corrupt",
                "--data",
                "synthetic:20",
                "--corruptions",
                "lava",
                "--out",
                o,
            ]),
            "lava",
        ),
        (
            s(&["run", "/nowhere/artifact", "--data", "synthetic:20"]),
            "/nowhere/artifact",
        ),
        (s(&["info", "/nowhere/m.card"]), "/nowhere/m.card"),
        // Found by the argument parser (exit 2): still one line.
        (s(&["train", "--bogus"]), "--bogus"),
        (s(&["train", "--arch", "conv4"]), "--data"),
        (
            s(&[
                "prune",
                "--sparsity",
                "half",
                "--data",
                "synthetic:64",
                "--out",
                o,
            ]),
            "half",
        ),
    ];
    let mut failures = Vec::new();
    for (args, needle) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = cardc(&a);
        let e = stderr(&r);
        let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
        let left = std::fs::read_dir(&out).unwrap().count();
        // Usage errors found by the parser exit with 2, the others with 1.
        let ok = matches!(r.status.code(), Some(1 | 2))
            && lines.len() == 1
            && lines[0].starts_with("cardc: error: ")
            && lines[0].contains(needle)
            && left == 0
            && !e.contains("panicked");
        if !ok {
            failures.push(format!(
                "{args:?}: exit {:?}, {left} files at --out: {e}",
                r.status.code()
            ));
        }
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
    }
    eprintln!(
        "bad flags: {} tried, {} handled cleanly",
        cases.len(),
        cases.len() - failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every input of the fuzz corpora (`fuzz/corpus/<target>/`) and every crash
/// the fuzzers found (`fuzz/regressions/<target>/`, kept after the fix) runs
/// through the same entry points as the fuzz targets, here in the normal
/// suite: a panic fails the test. The committed seeds are valid files and
/// must be accepted.
#[test]
fn fuzz_corpora_and_found_crashes_replay_cleanly() {
    let targets = cardc::fuzzing::TARGETS;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, entry) in targets {
        let mut replayed = 0;
        for kind in ["corpus", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                continue;
            };
            for file in dir {
                let path = file.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                let result = entry(&bytes);
                replayed += 1;
                if kind == "corpus" && path.file_name().unwrap().len() < 30 {
                    // Hand-named seeds (not libFuzzer's hash names) are valid.
                    assert!(result.is_ok(), "{}: {:?}", path.display(), result.err());
                }
            }
        }
        assert!(replayed > 0, "no corpus for fuzz target {name}");
    }
}
