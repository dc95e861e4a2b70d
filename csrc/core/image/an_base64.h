/*
 * an_base64.h - base64 codec of the Python-free core (RFC 4648).
 *
 * Decoding accepts what web clients actually send and refuses everything else
 * with the byte offset of the first bad character:
 *
 *   - the standard ('+', '/') or the URL-safe ('-', '_') alphabet, chosen per
 *     input by the first of those four characters that appears; a later
 *     character of the other alphabet is an error (a mix is a sign of a broken
 *     or spliced payload, never of a real encoder);
 *   - padding optional, but when present it must be complete ("ab==", "abc=")
 *     and only whitespace may follow it;
 *   - ASCII whitespace (space, \t, \n, \v, \f, \r) anywhere, skipped;
 *   - with AN_B64_DATA_URL, an optional "data:<mediatype>;base64," prefix
 *     ("data:" and ";base64," case-insensitive; the media type is not checked,
 *     images are identified by their magic bytes), after optional whitespace.
 *
 * Non-zero bits left over in the last character ("ab==" where 'b' carries low
 * bits) are ignored, as Python's base64 module does.  Errors are AN_ERR_BASE64
 * with err->actual = offset in the original input (a data-URL prefix and
 * whitespace included), and AN_ERR_LIMIT_BYTES when the decoded size would
 * exceed max_bytes (checked from the input length, before any allocation).
 */
#ifndef AN_BASE64_H
#define AN_BASE64_H

#include "../an_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Decoding flags. */
#define AN_B64_DATA_URL 1u /* accept an optional "data:...;base64," prefix */

/* An upper bound of the decoded size of in[0..len), computed without decoding:
 * 3/4 of the payload (after the data-URL prefix, trailing whitespace and '='
 * trimmed), exact when the payload has no inner whitespace.  Fails only with
 * AN_ERR_BASE64 for a "data:" prefix without ";base64,". */
an_status an_b64_decoded_bound(const uint8_t *in, size_t len, unsigned flags, size_t *bound,
                               an_error *err);

/* Decodes in[0..len) into out, which has room for cap bytes: enough when cap
 * >= an_b64_decoded_bound(); otherwise data that does not fit fails with
 * AN_ERR_INVALID_ARG (nothing is written past cap).  *out_len receives the
 * decoded size.  On error out holds an unspecified prefix of the data.
 * Allocates nothing. */
an_status an_b64_decode(const uint8_t *in, size_t len, unsigned flags, uint8_t *out, size_t cap,
                        size_t *out_len, an_error *err);

/* Bound, limit check and decode in one call: refuses with AN_ERR_LIMIT_BYTES
 * (err->actual = decoded size, err->limit = max_bytes; 0 = no limit) before
 * allocating, then decodes into a block from alloc.  On success the caller owns
 * *out (free it with an_free(alloc, ...)); on failure *out is NULL. */
an_status an_b64_decode_alloc(const uint8_t *in, size_t len, unsigned flags, uint64_t max_bytes,
                              const an_allocator *alloc, uint8_t **out, size_t *out_len,
                              an_error *err);

/* Length of the encoding of n bytes (with or without '=' padding), or 0 with
 * *ok = 0 when it would not fit in a size_t. */
size_t an_b64_encoded_len(size_t n, int pad, int *ok);

/* Encodes in[0..n) into out (an_b64_encoded_len(n, pad) chars, no NUL) with
 * the standard or the URL-safe alphabet.  Returns the number of chars written.
 * Never fails. */
size_t an_b64_encode(const uint8_t *in, size_t n, char *out, int urlsafe, int pad);

#ifdef __cplusplus
}
#endif
#endif /* AN_BASE64_H */
