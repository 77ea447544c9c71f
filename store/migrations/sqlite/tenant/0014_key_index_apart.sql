-- The key index moves to a file of its own beside the tenant's (`<tenant>.keys.db`,
-- attached as `key_index` by every connection, which creates its tables): 4 KiB
-- pages there instead of the 64 KiB the segment blobs are stored in, so a thousand
-- replaced keys write a thousand small pages. What the index held here is dropped; the
-- next load that needs it builds it again from the segments.
DROP TABLE transaction_keys;
DROP TABLE indexed_sources;
