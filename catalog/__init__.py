"""The image catalog: patients, exams, images and where each image lives (MongoDB)."""
