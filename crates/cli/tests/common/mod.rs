//! Helpers shared by the CLI tests.

use std::path::{Path, PathBuf};

/// `../shared/fixtures` next to the repository, or `/work/shared/fixtures` where the checkout
/// lives elsewhere.
pub fn shared_fixtures() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    }
}

/// Writes `docs` as a parquet file with one `text` column, two documents per row group.
#[allow(dead_code)] // used by some of the test binaries that include this module
pub fn write_text_parquet(path: &Path, docs: &[&str]) {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use std::sync::Arc;

    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema = parquet::schema::parser::parse_message_type(
        "message schema { required binary text (UTF8); }",
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(Default::default()))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).unwrap();
    for group in docs.chunks(2) {
        let mut rg = writer.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        let values: Vec<ByteArray> = group.iter().map(|d| ByteArray::from(*d)).collect();
        col.typed::<ByteArrayType>()
            .write_batch(&values, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    writer.close().unwrap();
}
