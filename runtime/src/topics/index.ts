/**
 * MQTT topic helpers: filter matching ({@link topicMatches}, {@link TopicTree}) and syntax
 * checks ({@link isValidTopicName}, {@link isValidTopicFilter}).
 * @module
 */
export { TopicTree, topicMatches } from './TopicTree.js';
export { isValidTopicName, isValidTopicFilter, MAX_TOPIC_BYTES } from './validate.js';
