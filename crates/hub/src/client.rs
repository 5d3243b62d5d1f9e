//! The Hub client: configuration from the environment, the repository listing at one commit, and
//! fetching files into the standard cache through hf-hub's sync API.
//!
//! What hf-hub 0.4 does for us: the download itself (`GET /{repo}/resolve/{rev}/{file}` after a
//! `Range: bytes=0-0` probe that reads `X-Repo-Commit`, `ETag`/`X-Linked-Etag` and the size from
//! `Content-Range`, following relative redirects), the `blobs/<etag>` + relative
//! `snapshots/<commit>/<file>` symlink + `refs/<rev>` layout, the file lock, and resuming: the
//! partial body stays in `blobs/<etag>.part`, and the next attempt (a retry within the run, or a
//! later run) asks for `Range: bytes=<len>-` and appends.
//!
//! What it lacks, filled here: `HF_TOKEN`, `HF_TOKEN_PATH`, `HF_HUB_CACHE` and `HF_HUB_OFFLINE`
//! (it reads only `HF_HOME` and `HF_ENDPOINT`; its token file is `<cache>/../token`, wrong when
//! the cache is moved); offline resolution from `refs/` and `snapshots/` alone; HTTP statuses
//! turned into messages (401 → set `HF_TOKEN`); a check of each downloaded file's size against
//! the repository listing (hf-hub renames the `.part` file whatever its length); downloads by
//! commit so that every file of one command comes from the same snapshot, while `refs/<rev>`
//! records the branch the way `huggingface_hub` does (hf-hub would write `refs/<commit>`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;

use crate::{HubError, HubSource, RepoKind, Result};

/// Where and how to reach the Hub, read from the environment `huggingface_hub` uses.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `HF_ENDPOINT` (`https://huggingface.co`).
    pub endpoint: String,
    /// `HF_HUB_CACHE`, else `$HF_HOME/hub` (`HF_HOME`: `$XDG_CACHE_HOME/huggingface`, else
    /// `~/.cache/huggingface`).
    pub cache: PathBuf,
    /// `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, else `$HF_HOME/token`).
    pub token: Option<String>,
    /// `HF_HUB_OFFLINE` set to 1/true/yes/on: no network, the cache only.
    pub offline: bool,
    /// Draw a progress bar per file (only ever on a terminal).
    pub progress: bool,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl HubConfig {
    /// The configuration from the environment, as `huggingface_hub` reads it.
    pub fn from_env() -> HubConfig {
        let home = env("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = env("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(env("HOME").unwrap_or_else(|| ".".into())).join(".cache")
            });
            cache.join("huggingface")
        });
        let cache = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("hub"));
        let token_file = env("HF_TOKEN_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join("token"));
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(token_file).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let offline = env("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        HubConfig {
            endpoint: env("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| "https://huggingface.co".into()),
            cache,
            token,
            offline,
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// A file of the repository listing: its path in the repository and size when the Hub said.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Path inside the repository (`/`-separated).
    pub name: String,
    /// Size in bytes (the listing's `size`, or the LFS object's).
    pub size: Option<u64>,
    /// The blob's name in the cache (the Hub's ETag): the LFS sha256, else the git blob id.
    pub etag: Option<String>,
}

/// One repository at one commit: the files it holds and a way to get each one locally.
pub struct Snapshot {
    source: HubSource,
    config: HubConfig,
    /// `<cache>/models--org--repo`.
    repo_dir: PathBuf,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Every file (online: the Hub's listing; offline: what the cache holds).
    pub files: Vec<Entry>,
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: String,
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    size: u64,
    sha256: Option<String>,
}

impl Snapshot {
    /// Resolves the source's revision to a commit and lists the files: from the Hub's
    /// `GET /api/{models|datasets}/{repo}/revision/{rev}?blobs=true`, or offline from the cache.
    pub fn open(source: &HubSource, config: &HubConfig) -> Result<Snapshot> {
        let repo_dir = config
            .cache
            .join(repo(source, &source.revision).folder_name());
        if config.offline {
            return Self::open_offline(source, config, repo_dir);
        }
        let api = api(config)?;
        let info: RepoInfo = api
            .repo(repo(source, &source.revision))
            .info_request()
            .query("blobs", "true")
            .call()
            .map_err(|e| http_error(source, config, "", e))?
            .into_json()
            .map_err(|e| {
                HubError::Http(format!(
                    "{}: the Hub's repository listing is not valid JSON: {e}",
                    source.display()
                ))
            })?;
        if source.revision != info.sha {
            let refs = repo_dir.join("refs").join(&source.revision);
            write_atomic(&refs, info.sha.as_bytes())?;
        }
        let files = info
            .siblings
            .into_iter()
            .map(|s| Entry {
                size: s.lfs.as_ref().map(|l| l.size).or(s.size),
                etag: s.lfs.and_then(|l| l.sha256).or(s.blob_id),
                name: s.rfilename,
            })
            .collect();
        Ok(Snapshot {
            source: source.clone(),
            config: config.clone(),
            repo_dir,
            commit: info.sha,
            files,
        })
    }

    fn open_offline(source: &HubSource, config: &HubConfig, repo_dir: PathBuf) -> Result<Snapshot> {
        let missing = |what: String| {
            HubError::NotFound(format!(
                "HF_HUB_OFFLINE is set and {what} is not in the cache {} \
                 (download it once without HF_HUB_OFFLINE)",
                config.cache.display()
            ))
        };
        if !repo_dir.is_dir() {
            return Err(missing(format!(
                "{} ({})",
                source.display(),
                dir_name(&repo_dir)
            )));
        }
        let rev = &source.revision;
        let is_commit = rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit());
        let commit = if is_commit && repo_dir.join("snapshots").join(rev).is_dir() {
            rev.clone()
        } else {
            let refs = repo_dir.join("refs").join(rev);
            std::fs::read_to_string(&refs)
                .map(|c| c.trim().to_string())
                .map_err(|_| {
                    missing(format!(
                        "revision `{rev}` of {} (no {})",
                        source.repo,
                        refs.display()
                    ))
                })?
        };
        let root = repo_dir.join("snapshots").join(&commit);
        let mut files = Vec::new();
        list_files(&root, "", &mut files);
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Snapshot {
            source: source.clone(),
            config: config.clone(),
            repo_dir,
            commit,
            files,
        })
    }

    /// True when the snapshot works from the cache alone.
    pub fn offline(&self) -> bool {
        self.config.offline
    }

    /// The source this snapshot is for.
    pub fn source(&self) -> &HubSource {
        &self.source
    }

    /// The local directory of `path` (a folder of the repository) in the snapshot.
    pub fn local_dir(&self, path: &str) -> PathBuf {
        let root = self.repo_dir.join("snapshots").join(&self.commit);
        if path.is_empty() {
            root
        } else {
            root.join(path)
        }
    }

    /// The listing entry of `name`.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.files.iter().find(|e| e.name == name)
    }

    /// The local path of `name`: already in the snapshot, else downloaded (online) or an error
    /// naming the missing file (offline).
    pub fn fetch(&self, name: &str) -> Result<PathBuf> {
        let local = self.local_dir(name);
        if local.is_file() {
            return Ok(local);
        }
        if self.config.offline {
            return Err(HubError::NotFound(format!(
                "HF_HUB_OFFLINE is set and `{name}` of {} (commit {}) is not in the cache {} \
                 (download it once without HF_HUB_OFFLINE)",
                self.source.display(),
                self.commit,
                self.config.cache.display()
            )));
        }
        if let Some(path) = self.finish_part(name)? {
            return Ok(path);
        }
        let api = api(&self.config)?;
        // By commit, so that every file of this command comes from one snapshot.
        let path = match api
            .repo(repo(&self.source, &self.commit))
            .download_with_progress(name, Bar::new(self.config.progress))
        {
            Ok(path) => path,
            Err(e) => match self.finish_part(name)? {
                Some(path) => path,
                None => return Err(api_error(&self.source, &self.config, name, e)),
            },
        };
        // hf-hub records the commit as a ref to itself; `huggingface_hub` keeps only named refs.
        let self_ref = self.repo_dir.join("refs").join(&self.commit);
        if self.source.revision != self.commit {
            let _ = std::fs::remove_file(self_ref);
        }
        self.check_size(name, &path)?;
        Ok(path)
    }

    /// Completes a download whose `blobs/<etag>.part` already holds every byte: hf-hub 0.4
    /// reports its last retry as failed even when that retry finished the file, and a later run
    /// would then ask for `Range: bytes=<size>-`, which the Hub answers 416. The part file is
    /// renamed to the blob and linked into the snapshot, as hf-hub would have done.
    fn finish_part(&self, name: &str) -> Result<Option<PathBuf>> {
        let Some(Entry {
            size: Some(size),
            etag: Some(etag),
            ..
        }) = self.entry(name)
        else {
            return Ok(None);
        };
        let blob = self.repo_dir.join("blobs").join(etag);
        let part = blob.with_extension("part");
        if std::fs::metadata(&part).map(|m| m.len()).ok() != Some(*size) {
            return Ok(None);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HubError::Io { path, source }
        };
        std::fs::rename(&part, &blob).map_err(io(&part))?;
        let pointer = self.local_dir(name);
        if let Some(dir) = pointer.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        // snapshots/<commit>/<name> → ../../blobs/<etag>, one more `..` per folder in `name`.
        let mut target = PathBuf::from("../..");
        for _ in name.matches('/') {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        let _ = std::fs::remove_file(&pointer);
        link(&target, &pointer).map_err(io(&pointer))?;
        Ok(Some(pointer))
    }

    /// A file whose length differs from the listing is removed (pointer and blob) and refused.
    fn check_size(&self, name: &str, path: &Path) -> Result<()> {
        let Some(want) = self.entry(name).and_then(|e| e.size) else {
            return Ok(());
        };
        let got = std::fs::metadata(path)
            .map_err(|source| HubError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if got == want {
            return Ok(());
        }
        if let Ok(blob) = std::fs::canonicalize(path) {
            let _ = std::fs::remove_file(blob);
        }
        let _ = std::fs::remove_file(path);
        Err(HubError::Http(format!(
            "{}: `{name}` arrived with {got} bytes, the Hub lists {want}; removed it, run again",
            self.source.display()
        )))
    }
}

#[cfg(unix)]
fn link(target: &Path, pointer: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, pointer)
}

#[cfg(not(unix))]
fn link(target: &Path, pointer: &Path) -> std::io::Result<()> {
    let blob = pointer.parent().unwrap_or(Path::new(".")).join(target);
    std::fs::rename(blob, pointer)
}

fn repo(source: &HubSource, revision: &str) -> Repo {
    let kind = match source.kind {
        RepoKind::Model => RepoType::Model,
        RepoKind::Dataset => RepoType::Dataset,
    };
    Repo::with_revision(source.repo.clone(), kind, revision.to_string())
}

fn api(config: &HubConfig) -> Result<hf_hub::api::sync::Api> {
    ApiBuilder::from_cache(Cache::new(config.cache.clone()))
        .with_endpoint(config.endpoint.clone())
        .with_token(config.token.clone())
        .with_progress(false)
        // A dropped connection resumes from the `.part` file with a Range request.
        .with_retries(3)
        .with_user_agent("dlm", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| HubError::Http(format!("cannot start the Hub client: {e}")))
}

fn dir_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Every regular file under `dir` (symlinks followed; dangling ones, whose blob is gone, skipped).
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<Entry>) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for e in read.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        match std::fs::metadata(e.path()) {
            Ok(m) if m.is_dir() => list_files(&e.path(), &rel, out),
            Ok(m) => out.push(Entry {
                name: rel,
                size: Some(m.len()),
                etag: None,
            }),
            Err(_) => {}
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn api_error(source: &HubSource, config: &HubConfig, file: &str, e: ApiError) -> HubError {
    match e {
        ApiError::RequestError(e) => http_error(source, config, file, *e),
        ApiError::TooManyRetries(inner) => match *inner {
            ApiError::RequestError(e) => http_error(source, config, file, *e),
            other => HubError::Http(format!(
                "{}: downloading `{file}` failed after 3 retries: {other} \
                 (the partial file is kept; run again to resume)",
                source.display()
            )),
        },
        other => HubError::Http(format!(
            "{}: downloading `{file}`: {other}",
            source.display()
        )),
    }
}

/// An HTTP failure in words: what was asked, what the Hub said, what to do.
fn http_error(source: &HubSource, config: &HubConfig, file: &str, e: ureq::Error) -> HubError {
    let what = if file.is_empty() {
        source.display()
    } else {
        format!("`{file}` of {}", source.display())
    };
    match e {
        ureq::Error::Status(code, resp) => {
            let said = resp
                .header("x-error-message")
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            match code {
                401 | 403 if config.token.is_none() => HubError::Auth(format!(
                    "{what}: the Hub answered {code}{said}. A private or gated repository needs \
                     a token: set HF_TOKEN (or run `huggingface-cli login`, which writes \
                     $HF_HOME/token)"
                )),
                401 | 403 => HubError::Auth(format!(
                    "{what}: the Hub answered {code}{said}; the token (HF_TOKEN or the token \
                     file) was refused or has no access to this repository"
                )),
                404 => HubError::NotFound(format!(
                    "{what}: not found on {} (HTTP 404{said}); check the repository name and \
                     revision `{}`",
                    config.endpoint, source.revision
                )),
                _ => HubError::Http(format!("{what}: the Hub answered HTTP {code}{said}")),
            }
        }
        ureq::Error::Transport(t) => HubError::Http(format!(
            "{what}: cannot reach {}: {t}; to work from the cache alone set HF_HUB_OFFLINE=1",
            config.endpoint
        )),
    }
}

/// A progress bar per downloaded file, drawn only on a terminal.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(show: bool) -> Bar {
        Bar(show.then(|| indicatif::ProgressBar::new(0)))
    }
}

impl hf_hub::api::Progress for Bar {
    fn init(&mut self, size: usize, filename: &str) {
        if let Some(bar) = &self.0 {
            bar.set_length(size as u64);
            bar.set_position(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
            ) {
                bar.set_style(style);
            }
            bar.set_message(filename.to_string());
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(size as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish();
        }
    }
}

/// The listing's files inside the folder `prefix`, sorted by name, with their sizes.
pub(crate) fn names_under<'a>(files: &'a [Entry], prefix: &str) -> BTreeMap<&'a str, Option<u64>> {
    files
        .iter()
        .filter(|e| under(&e.name, prefix))
        .map(|e| (e.name.as_str(), e.size))
        .collect()
}

/// True when `name` is `prefix` itself or inside the folder `prefix` (`""`: everything).
pub(crate) fn under(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.starts_with(prefix) && name.as_bytes().get(prefix.len()) == Some(&b'/'))
}
