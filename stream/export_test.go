package stream

// PullBufferOf is PullBuffer for a stream whose largest message is largest
// bytes: a test can make pulls end on their byte budget often.
var PullBufferOf = pullBuffer
