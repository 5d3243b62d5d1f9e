//! The key/value cache of one sequence: per layer, the rotated keys and the values of every
//! committed position, f32, preallocated to the context size.

/// Keys and values of the committed positions of one sequence.
#[derive(Clone, Debug)]
pub struct KvCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    kv_dim: usize,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache for `layers` layers, `kv_dim` floats per position, up to `capacity` positions.
    pub fn new(layers: usize, kv_dim: usize, capacity: usize) -> KvCache {
        KvCache {
            k: (0..layers)
                .map(|_| Vec::with_capacity(capacity * kv_dim))
                .collect(),
            v: (0..layers)
                .map(|_| Vec::with_capacity(capacity * kv_dim))
                .collect(),
            kv_dim,
            len: 0,
            capacity,
        }
    }

    /// Committed positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is committed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every position from `len` on (rolls back a speculative append).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
                layer.truncate(len * self.kv_dim);
            }
        }
    }

    pub(crate) fn layer(&self, i: usize) -> (&[f32], &[f32]) {
        (
            &self.k[i][..self.len * self.kv_dim],
            &self.v[i][..self.len * self.kv_dim],
        )
    }

    pub(crate) fn append(&mut self, i: usize, k: &[f32], v: &[f32]) {
        self.k[i].truncate(self.len * self.kv_dim);
        self.v[i].truncate(self.len * self.kv_dim);
        self.k[i].extend_from_slice(k);
        self.v[i].extend_from_slice(v);
    }

    /// Replaces the keys/values of positions `at ..` of layer `i` (they must be committed).
    pub(crate) fn overwrite(&mut self, i: usize, at: usize, k: &[f32], v: &[f32]) {
        let (from, to) = (at * self.kv_dim, at * self.kv_dim + k.len());
        self.k[i][from..to].copy_from_slice(k);
        self.v[i][from..to].copy_from_slice(v);
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}
