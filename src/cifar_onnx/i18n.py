"""The page's words in English and Ukrainian (the course's language)."""

from __future__ import annotations

LANGUAGES = {"en": "English", "uk": "Українська"}
DEFAULT_LANGUAGE = "en"

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "CIFAR-10 classifier",
        "lead": "Upload a photo: the model says which of the ten CIFAR-10 classes it shows.",
        "choose": "Choose photos",
        "choose_help": "One or several images: JPEG, PNG, GIF, WebP, BMP or TIFF.",
        "camera": "Take a photo",
        "camera_help": "Opens the camera on a phone or tablet.",
        "drop": "Or drop them here, or paste one (Ctrl+V).",
        "model": "Model",
        "classify": "Classify",
        "thumb_alt": "The photo {name}",
        "probability": "probability",
        "result": "Result",
        "it_is": "It looks like",
        "confidence": "confidence",
        "top5": "Top five classes",
        "inference": "inference",
        "error": "Could not classify this file",
        "classes_note": "Classes: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.",
        "api": "JSON API and its OpenAPI schema",
        "language": "Language",
        "busy": "Classifying…",
        "accuracy": "test accuracy",
        "err_no_file": "Choose an image file first.",
        "err_unsupported_media_type": "This is not an image format we read. Use JPEG, PNG, GIF, WebP, BMP or TIFF.",
        "err_corrupt_image": "The image is corrupt or cut short and cannot be read.",
        "err_too_many_pixels": "The image has too many pixels.",
        "err_payload_too_large": "The file is too large.",
        "err_too_many_files": "Too many files at once.",
        "err_decoder_busy": "The service is busy reading other large images; try again in a moment.",
        "err_unknown_model": "There is no such model.",
        "err_not_ready": "The model is still loading; try again in a moment.",
        "err_unknown_label": "There is no such class.",
        "err_overloaded": "The service is busy right now; try again in a moment.",
        "err_other": "Something went wrong.",
        "unsure": "Unsure: this may show none of the ten classes.",
        "unsure_detail": (
            "The percentages only compare the ten classes with one another; this picture gives the "
            "model little evidence for any of them, so it may show something else entirely."
        ),
        "best_guess": "Best guess",
        "where": "Where did it look?",
        "where_loading": "Drawing the heat map…",
        "where_alt": "Heat map over the photo: red marks the parts that were the strongest evidence for “{label}”.",
        "where_note": "Red: covering this part lowers the model's belief in “{label}” the most. Blue: little evidence.",
    },
    "uk": {
        "title": "Класифікатор CIFAR-10",
        "lead": "Завантажте фото: модель скаже, який із десяти класів CIFAR-10 на ньому.",
        "choose": "Оберіть фото",
        "choose_help": "Одне або кілька зображень: JPEG, PNG, GIF, WebP, BMP або TIFF.",
        "camera": "Сфотографувати",
        "camera_help": "Відкриває камеру на телефоні чи планшеті.",
        "drop": "Або перетягніть їх сюди, або вставте одне (Ctrl+V).",
        "model": "Модель",
        "classify": "Класифікувати",
        "thumb_alt": "Фото {name}",
        "probability": "імовірність",
        "result": "Результат",
        "it_is": "Схоже, це",
        "confidence": "впевненість",
        "top5": "П'ять найімовірніших класів",
        "inference": "інференс",
        "error": "Не вдалося класифікувати цей файл",
        "classes_note": "Класи: літак, автомобіль, птах, кіт, олень, собака, жаба, кінь, корабель, вантажівка.",
        "api": "JSON API та його схема OpenAPI",
        "language": "Мова",
        "busy": "Класифікую…",
        "accuracy": "точність на тесті",
        "err_no_file": "Спершу оберіть файл зображення.",
        "err_unsupported_media_type": "Це не той формат зображення, який ми читаємо. Використайте JPEG, PNG, GIF, WebP, BMP або TIFF.",
        "err_corrupt_image": "Зображення пошкоджене або обрізане, його неможливо прочитати.",
        "err_too_many_pixels": "Зображення має забагато пікселів.",
        "err_payload_too_large": "Файл завеликий.",
        "err_too_many_files": "Забагато файлів за раз.",
        "err_decoder_busy": "Сервіс зараз читає інші великі зображення; спробуйте за мить.",
        "err_unknown_model": "Такої моделі немає.",
        "err_not_ready": "Модель ще завантажується; спробуйте за мить.",
        "err_unknown_label": "Такого класу немає.",
        "err_overloaded": "Сервіс зараз зайнятий; спробуйте за мить.",
        "err_other": "Щось пішло не так.",
        "unsure": "Непевно: можливо, тут жоден із десяти класів.",
        "unsure_detail": (
            "Відсотки лише порівнюють десять класів між собою; це зображення дає моделі мало свідчень "
            "на користь будь-якого з них, тож на ньому може бути щось зовсім інше."
        ),
        "best_guess": "Найкраще припущення",
        "where": "Куди дивилася модель?",
        "where_loading": "Малюю теплову карту…",
        "where_alt": "Теплова карта над фото: червоним позначено частини, що найбільше свідчать на користь «{label}».",
        "where_note": "Червоне: якщо закрити цю частину, віра моделі в «{label}» падає найбільше. Синє: мало свідчень.",
    },
}

CLASS_NAMES: dict[str, dict[str, str]] = {
    "uk": {
        "airplane": "літак", "automobile": "автомобіль", "bird": "птах", "cat": "кіт",
        "deer": "олень", "dog": "собака", "frog": "жаба", "horse": "кінь",
        "ship": "корабель", "truck": "вантажівка",
    },
}  # fmt: skip


def pick_language(query: str | None, cookie: str | None, accept: str | None) -> str:
    """An explicit ?lang= wins, then the cookie it set, then the browser's Accept-Language."""
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


def class_name(label: str, lang: str) -> str:
    return CLASS_NAMES.get(lang, {}).get(label, label)
