//! The memory tier: bodies as `Bytes` in a size-bounded S3-FIFO cache (quick_cache), so a hit
//! is a reference-count increment and eviction keeps frequently used objects.

use bytes::{Bytes, BytesMut};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::{BodyId, BodyWriter, Storage, StorageError, StoredBody, Usage};

#[derive(Clone)]
struct BodyWeight;

impl Weighter<BodyId, Bytes> for BodyWeight {
    fn weight(&self, _id: &BodyId, body: &Bytes) -> u64 {
        // Small bodies still cost their map slot.
        body.len() as u64 + 64
    }
}

pub struct MemoryStorage {
    bodies: std::sync::Arc<Cache<BodyId, Bytes, BodyWeight>>,
    max_object: u64,
}

impl MemoryStorage {
    /// A tier of `capacity` bytes that takes bodies up to `max_object` bytes.
    pub fn new(capacity: u64, max_object: u64) -> MemoryStorage {
        let estimated_items = (capacity / 16_384).clamp(64, 1 << 20) as usize;
        MemoryStorage {
            bodies: std::sync::Arc::new(Cache::with_weighter(
                estimated_items,
                capacity.max(1),
                BodyWeight,
            )),
            max_object: max_object.min(capacity),
        }
    }

    /// Stores a whole body at once (a disk body promoted on a hit).
    pub fn insert(&self, id: BodyId, body: Bytes) {
        if body.len() as u64 <= self.max_object {
            self.bodies.insert(id, body);
        }
    }

    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    /// Whether this body is in memory now (without counting as a use).
    pub fn holds(&self, id: BodyId) -> bool {
        self.bodies.contains_key(&id)
    }
}

struct MemoryWriter {
    bodies: std::sync::Arc<Cache<BodyId, Bytes, BodyWeight>>,
    id: BodyId,
    buffer: Option<BytesMut>,
    max_object: u64,
}

impl Storage for MemoryStorage {
    fn writer(
        &self,
        id: BodyId,
        expected_len: Option<u64>,
    ) -> Result<Option<Box<dyn BodyWriter>>, StorageError> {
        if expected_len.is_some_and(|len| len > self.max_object) {
            return Ok(None);
        }
        Ok(Some(Box::new(MemoryWriter {
            bodies: self.bodies.clone(),
            id,
            buffer: Some(BytesMut::with_capacity(expected_len.unwrap_or(0) as usize)),
            max_object: self.max_object,
        })))
    }

    fn read(&self, id: BodyId) -> Result<Option<StoredBody>, StorageError> {
        Ok(self.bodies.get(&id).map(StoredBody::Bytes))
    }

    fn remove(&self, id: BodyId) -> Result<(), StorageError> {
        self.bodies.remove(&id);
        Ok(())
    }

    fn usage(&self) -> Usage {
        let objects = self.bodies.len() as u64;
        Usage {
            bytes: self.bodies.weight().saturating_sub(objects * 64),
            objects,
        }
    }
}

impl BodyWriter for MemoryWriter {
    fn write(&mut self, chunk: &Bytes) -> Result<bool, StorageError> {
        let Some(buffer) = &mut self.buffer else {
            return Ok(false);
        };
        if (buffer.len() + chunk.len()) as u64 > self.max_object {
            self.buffer = None;
            return Ok(false);
        }
        buffer.extend_from_slice(chunk);
        Ok(true)
    }

    fn finish(self: Box<Self>) -> Result<(), StorageError> {
        if let Some(buffer) = self.buffer {
            self.bodies.insert(self.id, buffer.freeze());
        }
        Ok(())
    }
}
