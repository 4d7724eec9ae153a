// RFC 9110's token (§5.6.2), the grammar of a method and of a header field name: the retry
// policy's `methods` and the redirect policy's `sensitiveHeaders` are checked against it.
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/** Whether `value` is an HTTP token: a method or a header field name as HTTP allows it. */
export const isToken = (value: string): boolean => TOKEN.test(value)
